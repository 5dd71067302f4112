/**
 * The body of a queue message, for every queue of the app (pulls, deliveries, purges):
 * JSON, base64-encoded, which is the Functions host's default encoding for queue triggers.
 */

export function encodeQueueMessage(message: object): string {
  return Buffer.from(JSON.stringify(message), "utf8").toString("base64");
}

/**
 * A message's fields as the host hands them over (already parsed JSON, or its text), for the
 * queue's own validation; an empty object when the text is not JSON.
 */
export function queueMessageFields(raw: unknown): Record<string, unknown> {
  let value = raw;
  if (typeof value === "string") {
    try {
      value = JSON.parse(value);
    } catch {
      return {};
    }
  }
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
}
