/**
 * Splits an OData list response `{"@odata.context": ..., "value": [ ... ], "@odata.nextLink": ...}`
 * into the exact source text of each item, so each alert can be stored byte for byte as
 * Defender sent it (re-serialising parsed JSON would change number and escape formatting).
 * One linear scan over the text; each item is then parsed on its own (by the caller), and
 * the envelope without the items is parsed once.
 */
export interface ODataPage {
  items: string[];
  nextLink?: string;
  /** `@odata.count`, when the request asked for `$count=true`. */
  count?: number;
}

export function splitODataPage(text: string): ODataPage {
  const start = findValueArray(text);
  const items: string[] = [];
  let depth = 0;
  let itemStart = -1;
  let end = -1;
  for (let i = start + 1; i < text.length && end < 0; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      if (depth === 0) throw new SyntaxError("The value array holds a non-object item");
      // a string: skip to its closing quote, honouring escapes
      i++;
      while (i < text.length && text.charCodeAt(i) !== 0x22) {
        if (text.charCodeAt(i) === 0x5c) i++;
        i++;
      }
    } else if (c === 0x7b || c === 0x5b) {
      if (depth === 0) itemStart = i;
      depth++;
    } else if (c === 0x7d || c === 0x5d) {
      if (depth === 0) end = i; // the end of the value array
      else if (--depth === 0) items.push(text.slice(itemStart, i + 1));
    } else if (depth === 0 && c !== 0x2c && c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) {
      throw new SyntaxError("The value array holds a non-object item");
    }
  }
  if (end < 0) throw new SyntaxError("The value array is not closed");
  // The envelope without the items: checks the rest of the JSON and gives the nextLink.
  const envelope = JSON.parse(text.slice(0, start + 1) + text.slice(end)) as { "@odata.nextLink"?: unknown; "@odata.count"?: unknown };
  const nextLink = envelope["@odata.nextLink"];
  const count = envelope["@odata.count"];
  return {
    items,
    ...(typeof nextLink === "string" ? { nextLink } : {}),
    ...(typeof count === "number" && Number.isInteger(count) ? { count } : {}),
  };
}

/** Offset of the `[` that opens the top-level "value" member. */
function findValueArray(text: string): number {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const keyStart = i;
      i++;
      while (i < text.length && text.charCodeAt(i) !== 0x22) {
        if (text.charCodeAt(i) === 0x5c) i++;
        i++;
      }
      if (depth === 1 && text.slice(keyStart, i + 1) === '"value"') {
        let j = i + 1;
        while (/\s/.test(text[j] ?? "")) j++;
        if (text[j] === ":") {
          j++;
          while (/\s/.test(text[j] ?? "")) j++;
          if (text[j] === "[") return j;
        }
      }
      continue;
    }
    if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  throw new SyntaxError("The response has no value array");
}
