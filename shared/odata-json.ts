/**
 * Splits an OData list response `{"@odata.context": ..., "value": [ ... ], "@odata.nextLink": ...}`
 * into the exact source text of each item, so each alert can be stored byte for byte as
 * Defender sent it (re-serialising parsed JSON would change number and escape formatting).
 * One linear scan over the text; each item is then parsed on its own.
 */
export interface ODataPage {
  items: string[];
  nextLink?: string;
}

export function splitODataPage(text: string): ODataPage {
  const body = JSON.parse(text) as { value?: unknown; "@odata.nextLink"?: unknown };
  if (!Array.isArray(body.value)) throw new SyntaxError("The response has no value array");
  const nextLink = typeof body["@odata.nextLink"] === "string" ? body["@odata.nextLink"] : undefined;
  if (body.value.length === 0) return nextLink ? { items: [], nextLink } : { items: [] };
  const start = findValueArray(text);
  const items: string[] = [];
  let depth = 0;
  let itemStart = -1;
  for (let i = start + 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // a string: skip to its closing quote, honouring escapes
      i++;
      while (i < text.length && text.charCodeAt(i) !== 0x22) {
        if (text.charCodeAt(i) === 0x5c) i++;
        i++;
      }
      continue;
    }
    if (c === 0x7b || c === 0x5b) {
      if (depth === 0) itemStart = i;
      depth++;
    } else if (c === 0x7d || c === 0x5d) {
      if (depth === 0) break; // the end of the value array
      depth--;
      if (depth === 0) {
        items.push(text.slice(itemStart, i + 1));
        itemStart = -1;
      }
    }
  }
  if (items.length !== body.value.length) throw new SyntaxError("Could not split the value array into items");
  return nextLink ? { items, nextLink } : { items };
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
