/** Function keys of the dev host. */
import { randomBytes } from "node:crypto";

/** A new random key (256 bits, URL-safe base64, like the keys Azure generates). */
export function newFunctionKey(): string {
  return randomBytes(32).toString("base64url");
}

/** True for a string the dev host accepts as a key: 16 to 256 URL-safe characters. */
export function isFunctionKey(value: string): boolean {
  return /^[A-Za-z0-9_\-=]{16,256}$/.test(value);
}
