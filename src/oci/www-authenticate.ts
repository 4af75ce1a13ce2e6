// PURE: parses WWW-Authenticate header values (RFC 7235): one or more challenges, each a scheme
// followed by comma-separated auth-params (`key=token` or `key="quoted"`) or a token68.

export interface AuthChallenge {
  /** Lower-cased scheme: `basic`, `bearer`, ... */
  scheme: string;
  /** Lower-cased parameter names. */
  params: Record<string, string>;
}

const tokenChar = /[!#$%&'*+.^_`|~0-9A-Za-z-]/;

class Cursor {
  pos = 0;
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }
  get done(): boolean {
    return this.pos >= this.text.length;
  }
  peek(): string {
    return this.text[this.pos] ?? "";
  }
  skipSpace(): void {
    while (this.peek() === " " || this.peek() === "\t") this.pos++;
  }
  token(): string {
    const start = this.pos;
    while (!this.done && tokenChar.test(this.peek())) this.pos++;
    return this.text.slice(start, this.pos);
  }
  quoted(): string {
    // at the opening quote
    this.pos++;
    let out = "";
    while (!this.done && this.peek() !== '"') {
      if (this.peek() === "\\" && this.pos + 1 < this.text.length) this.pos++;
      out += this.peek();
      this.pos++;
    }
    this.pos++; // closing quote (or end)
    return out;
  }
}

/** Parses every challenge in the header value(s); unparseable parts are skipped, never thrown. */
export function parseWwwAuthenticate(values: string | readonly string[] | undefined): AuthChallenge[] {
  if (values === undefined) return [];
  const list = typeof values === "string" ? [values] : values;
  const out: AuthChallenge[] = [];
  for (const value of list) {
    const c = new Cursor(value);
    let current: AuthChallenge | undefined;
    while (!c.done) {
      c.skipSpace();
      if (c.peek() === ",") {
        c.pos++;
        continue;
      }
      const word = c.token();
      if (word === "") {
        c.pos++; // junk character
        continue;
      }
      c.skipSpace();
      if (c.peek() === "=") {
        // An auth-param of the current challenge (or a token68 ending in '=').
        c.pos++;
        c.skipSpace();
        let val: string;
        if (c.peek() === '"') val = c.quoted();
        else val = c.token();
        if (current) current.params[word.toLowerCase()] = val;
        continue;
      }
      // A word not followed by '=' starts a new challenge (its scheme).
      current = { scheme: word.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

/** The challenge of the given scheme, if present. */
export function findChallenge(challenges: readonly AuthChallenge[], scheme: string): AuthChallenge | undefined {
  return challenges.find((c) => c.scheme === scheme.toLowerCase());
}
