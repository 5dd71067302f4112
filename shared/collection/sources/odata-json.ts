/**
 * Splits an OData list response `{"@odata.context": ..., "value": [ ... ], "@odata.nextLink": ...}`
 * into the exact source text of each item, so each alert can be stored byte for byte as the
 * API sent it (re-serialising parsed JSON would change number and escape formatting).
 *
 * It streams: text is fed in chunks as it arrives, and each item is handed out as soon as
 * its closing brace is seen, so a page is never held whole. One linear scan; each item is
 * parsed on its own by the caller, and the envelope without the items (context, nextLink,
 * count) is parsed once at the end. Members may come in any order (Graph sends the
 * nextLink before `value`).
 */
export interface ODataEnvelope {
  nextLink?: string;
  /** `@odata.count`, when the request asked for `$count=true`. */
  count?: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const COLON = 0x3a;
const COMMA = 0x2c;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/** The first unescaped `"` at or after `from` (`from` is not escaped), or -1. */
function closingQuote(text: string, from: number): number {
  for (let q = text.indexOf('"', from); q >= 0; q = text.indexOf('"', q + 1)) {
    let backslashes = 0;
    while (q - backslashes - 1 >= from && text.charCodeAt(q - backslashes - 1) === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return q;
  }
  return -1;
}

/** How many backslashes end `text`, counted back to `from`. */
function trailingBackslashes(text: string, from: number): number {
  let n = 0;
  while (text.length - n - 1 >= from && text.charCodeAt(text.length - n - 1) === BACKSLASH) n++;
  return n;
}

export class ODataItemStream {
  /** Open `{`/`[` of the document. */
  private depth = 0;
  private inString = false;
  private escaped = false;
  /** The text of the top-level string being read (keys and small values), capped. */
  private topString: string | undefined;
  private lastTopString: string | undefined;
  /** A top-level key was just read and its colon seen. */
  private keyPending: string | undefined;
  /** Inside the top-level "value" array (depth 2 and deeper). */
  private inValue = false;
  private valueSeen = false;
  private valueClosed = false;
  /** The text of the item being read, across chunks. */
  private item: string[] = [];
  private itemStart = -1;
  /** The document without the items, for the final parse. */
  private envelope: string[] = [];

  /** Feeds the next piece of text; returns the items completed in it. */
  feed(chunk: string): string[] {
    const items: string[] = [];
    let envelopeFrom = this.inValue ? -1 : 0;
    this.itemStart = this.item.length > 0 ? 0 : -1;
    for (let i = 0; i < chunk.length; i++) {
      if (this.inString && !this.escaped && this.topString === undefined) {
        // Inside an item's string (most of the text): jump to its closing quote.
        const end = closingQuote(chunk, i);
        if (end < 0) {
          this.escaped = trailingBackslashes(chunk, i) % 2 === 1;
          break;
        }
        this.inString = false;
        i = end;
        continue;
      }
      const c = chunk.charCodeAt(i);
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === BACKSLASH) this.escaped = true;
        else if (c === QUOTE) {
          this.inString = false;
          if (this.topString !== undefined) {
            this.lastTopString = this.topString;
            this.topString = undefined;
          }
        } else if (this.topString !== undefined && this.topString.length < 64) this.topString += chunk[i];
        continue;
      }
      if (c === QUOTE) {
        if (this.inValue && this.depth === 2) throw new SyntaxError("The value array holds a non-object item");
        this.inString = true;
        if (this.depth === 1) this.topString = "";
        continue;
      }
      if (this.inValue) {
        if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
          if (this.depth === 2) {
            if (c !== OPEN_OBJECT) throw new SyntaxError("The value array holds a non-object item");
            this.itemStart = i;
          }
          this.depth++;
        } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
          this.depth--;
          if (this.depth === 2) {
            this.item.push(chunk.slice(this.itemStart, i + 1));
            items.push(this.item.join(""));
            this.item = [];
            this.itemStart = -1;
          } else if (this.depth === 1) {
            // The end of the value array: the envelope goes on from its closing bracket.
            this.inValue = false;
            this.valueClosed = true;
            envelopeFrom = i;
          }
        } else if (this.depth === 2 && c !== COMMA && !isSpace(c)) {
          throw new SyntaxError("The value array holds a non-object item");
        }
        continue;
      }
      if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
        this.depth++;
        if (c === OPEN_ARRAY && this.depth === 2 && this.keyPending === "value") {
          // The value array: its items are read, not kept in the envelope.
          this.inValue = true;
          this.valueSeen = true;
          this.envelope.push(chunk.slice(envelopeFrom, i + 1));
          envelopeFrom = -1;
        }
        this.keyPending = undefined;
      } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
        this.depth--;
        this.keyPending = undefined;
      } else if (c === COLON && this.depth === 1) {
        this.keyPending = this.lastTopString;
      } else if (c === COMMA) {
        this.keyPending = undefined;
      }
    }
    if (this.inValue && this.itemStart >= 0) this.item.push(chunk.slice(this.itemStart));
    if (envelopeFrom >= 0) this.envelope.push(chunk.slice(envelopeFrom));
    return items;
  }

  /** After the last chunk: the envelope's nextLink and count; throws when the document is incomplete. */
  end(): ODataEnvelope {
    if (!this.valueSeen) throw new SyntaxError("The response has no value array");
    if (!this.valueClosed || this.inString || this.depth !== 0) throw new SyntaxError("The value array is not closed");
    const envelope = JSON.parse(this.envelope.join("")) as { "@odata.nextLink"?: unknown; "@odata.count"?: unknown };
    const nextLink = envelope["@odata.nextLink"];
    const count = envelope["@odata.count"];
    return {
      ...(typeof nextLink === "string" ? { nextLink } : {}),
      ...(typeof count === "number" && Number.isInteger(count) ? { count } : {}),
    };
  }
}
