// Git's ref advertisement as smart-HTTP servers send it for `GET <repo>/info/refs?service=git-upload-pack`
// (protocol v0/v1, pkt-line framed), and the plain-text `info/refs` file of dumb HTTP servers.
// Both parsers are incremental: they take the body chunk by chunk and hand out events, so a caller
// can stop reading as soon as it has the ref it wants and memory stays bounded however many refs a
// repository advertises.
//
// pkt-line: 4 hex digits give the packet length including themselves; `0000` is a flush packet,
// `0001` a delimiter and `0002` a response end (protocol v2); a data packet carries up to 65516 bytes.
//
// Smart advertisement (v0; v1 adds a `version 1` line before the refs):
//   001e# service=git-upload-pack\n  0000
//   <oid> HEAD\0<capabilities separated by spaces>\n     (or `<zero-oid> capabilities^{}\0<caps>` when empty)
//   <oid> refs/heads/main\n
//   <oid> refs/tags/v1.0\n
//   <oid> refs/tags/v1.0^{}\n     (the commit an annotated tag points to)
//   0000
//
// Dumb `info/refs`: one `<oid>\t<refname>\n` line per ref (and `<oid>\t<refname>^{}` for peeled tags);
// it has no HEAD and no capabilities.

/** A decoded pkt-line packet. */
export type PktLine = { type: "data"; payload: Uint8Array } | { type: "flush" } | { type: "delim" } | { type: "response-end" };

/** Largest packet (length prefix included) git writes or accepts. */
const MAX_PKT_LENGTH = 65520;

/** Malformed pkt-line framing or an advertisement that does not follow the protocol. */
export class GitProtocolError extends Error {
  override readonly name = "GitProtocolError";
  /** Byte offset in the stream where the problem was found, when known. */
  readonly offset: number | undefined;

  constructor(message: string, offset?: number) {
    super(offset === undefined ? message : `${message} (at byte ${offset})`);
    this.offset = offset;
  }
}

/** The server sent an `ERR <message>` packet (e.g. "access denied", "repository not exported"). */
export class GitServerMessageError extends Error {
  override readonly name = "GitServerMessageError";
  readonly serverMessage: string;

  constructor(serverMessage: string) {
    super(`the git server reported an error: ${serverMessage}`);
    this.serverMessage = serverMessage;
  }
}

const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8");

function hexDigit(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x61 + 10;
  if (b >= 0x41 && b <= 0x46) return b - 0x41 + 10;
  return -1;
}

/** Shows up to 16 bytes for an error message (printable ASCII as-is, the rest as \xNN). */
function showBytes(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes.subarray(0, 16)) out += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`;
  return JSON.stringify(out) + (bytes.length > 16 ? "..." : "");
}

/** Splits a byte stream into pkt-line packets, across chunk boundaries. */
export class PktLineDecoder {
  #pending: Uint8Array = new Uint8Array(0);
  /** Start of the undecoded bytes in `#pending`. */
  #pos = 0;
  /** Stream offset of `#pending[#pos]`. */
  #offset = 0;

  /** Decodes every complete packet in what has arrived so far; keeps an incomplete tail. */
  push(chunk: Uint8Array): PktLine[] {
    this.feed(chunk);
    const out: PktLine[] = [];
    for (let p = this.next(); p !== undefined; p = this.next()) out.push(p);
    return out;
  }

  /** Adds bytes without decoding them; take packets with `next()`. */
  feed(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.#pos > 0) {
      this.#pending = this.#pending.slice(this.#pos);
      this.#pos = 0;
    }
    if (this.#pending.length === 0) {
      this.#pending = chunk.slice();
      return;
    }
    const buf = new Uint8Array(this.#pending.length + chunk.length);
    buf.set(this.#pending, 0);
    buf.set(chunk, this.#pending.length);
    this.#pending = buf;
  }

  /** The next complete packet, or undefined when more bytes are needed. Throws on malformed framing. */
  next(): PktLine | undefined {
    const buf = this.#pending;
    const pos = this.#pos;
    if (buf.length - pos < 4) return undefined;
    let len = 0;
    for (let i = 0; i < 4; i++) {
      const d = hexDigit(buf[pos + i]!);
      if (d < 0) {
        throw new GitProtocolError(`invalid pkt-line length ${showBytes(buf.subarray(pos, pos + 4))}: expected 4 hex digits`, this.#offset);
      }
      len = len * 16 + d;
    }
    if (len === 0 || len === 1 || len === 2) {
      this.#advance(4);
      return { type: len === 0 ? "flush" : len === 1 ? "delim" : "response-end" };
    }
    if (len === 3) throw new GitProtocolError("invalid pkt-line length 0003", this.#offset);
    if (len > MAX_PKT_LENGTH) {
      throw new GitProtocolError(`pkt-line length ${len} exceeds the maximum of ${MAX_PKT_LENGTH}`, this.#offset);
    }
    if (buf.length - pos < len) return undefined;
    const payload = buf.slice(pos + 4, pos + len);
    this.#advance(len);
    return { type: "data", payload };
  }

  #advance(n: number): void {
    this.#pos += n;
    this.#offset += n;
  }

  /** Bytes of an incomplete packet held back so far. */
  get pendingBytes(): number {
    return this.#pending.length - this.#pos;
  }

  /** Call at the end of the stream: throws when it ended inside a packet. */
  end(): void {
    if (this.pendingBytes > 0) {
      throw new GitProtocolError(`the stream ended inside a pkt-line (${this.pendingBytes} bytes of an incomplete packet)`, this.#offset);
    }
  }
}

/** Decodes a complete pkt-line stream. Throws GitProtocolError on malformed framing. */
export function decodePktLines(bytes: Uint8Array): PktLine[] {
  const decoder = new PktLineDecoder();
  const packets = decoder.push(bytes);
  decoder.end();
  return packets;
}

/** Encodes one data packet (for tests and request bodies). */
export function encodePktLine(data: string | Uint8Array): Uint8Array {
  const payload = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const len = payload.length + 4;
  if (len > MAX_PKT_LENGTH) throw new RangeError(`pkt-line payload of ${payload.length} bytes is too long`);
  const out = new Uint8Array(len);
  out.set(new TextEncoder().encode(len.toString(16).padStart(4, "0")), 0);
  out.set(payload, 4);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Ref advertisement.

/** What the advertisement parser reports, in stream order. */
export type AdvertisementEvent =
  /** Once, before the first ref (smart format only): the server's capabilities. */
  | { type: "capabilities"; capabilities: readonly string[]; symrefs: ReadonlyMap<string, string> }
  | { type: "ref"; name: string; oid: string }
  /** The object an annotated tag points to; `name` without the `^{}` suffix. Follows its ref. */
  | { type: "peeled"; name: string; oid: string }
  /** The advertisement is complete (smart: its flush packet; dumb: the end of the body). */
  | { type: "end" };

export type AdvertisementFormat = "smart" | "dumb";

const OID_RE = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
const ZERO_OID_RE = /^0+$/;

/** A ref name as it may appear in an advertisement: no spaces, controls or NUL. */
// eslint-disable-next-line no-control-regex
const REF_NAME_RE = /^[^\x00-\x20\x7f]+$/;

function parseRefLine(text: string, sep: " " | "\t", offset: number | undefined): { name: string; oid: string } {
  const i = text.indexOf(sep);
  const oid = i < 0 ? text : text.slice(0, i);
  const name = i < 0 ? "" : text.slice(i + 1);
  if (!OID_RE.test(oid)) {
    throw new GitProtocolError(`invalid ref line ${JSON.stringify(text.slice(0, 80))}: expected an object id (40 or 64 lower-case hex digits)`, offset);
  }
  if (!REF_NAME_RE.test(name)) {
    throw new GitProtocolError(`invalid ref line ${JSON.stringify(text.slice(0, 80))}: expected "<object id>${sep === " " ? " " : "\\t"}<ref name>"`, offset);
  }
  return { name, oid };
}

function refOrPeeled(ref: { name: string; oid: string }): AdvertisementEvent {
  return ref.name.endsWith("^{}") ? { type: "peeled", name: ref.name.slice(0, -3), oid: ref.oid } : { type: "ref", ...ref };
}

/** Parses `symref=HEAD:refs/heads/main` capabilities. */
function symrefsOf(capabilities: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const c of capabilities) {
    if (!c.startsWith("symref=")) continue;
    const v = c.slice("symref=".length);
    const colon = v.indexOf(":");
    if (colon > 0 && colon < v.length - 1) out.set(v.slice(0, colon), v.slice(colon + 1));
  }
  return out;
}

type SmartState = "start" | "service-header" | "first-ref" | "refs" | "done";

/**
 * Parses a ref advertisement incrementally. `smart` is the pkt-line form of
 * `info/refs?service=git-upload-pack` (protocol v0/v1); `dumb` the plain `info/refs` file.
 * Throws GitProtocolError on anything malformed and GitServerMessageError on an `ERR` packet.
 */
export class RefAdvertisementParser {
  readonly format: AdvertisementFormat;
  #pkt = new PktLineDecoder();
  #state: SmartState = "start";
  #text = "";
  #dumbOffset = 0;
  #lastRef: string | undefined;

  constructor(format: AdvertisementFormat) {
    this.format = format;
  }

  /** True once the advertisement is complete; later bytes are ignored. */
  get done(): boolean {
    return this.#state === "done";
  }

  push(chunk: Uint8Array): AdvertisementEvent[] {
    if (this.#state === "done") return [];
    return this.format === "smart" ? this.#pushSmart(chunk) : this.#pushDumb(chunk);
  }

  /** Call when the body ended. Returns the final events; throws when the advertisement is incomplete. */
  end(): AdvertisementEvent[] {
    if (this.#state === "done") return [];
    if (this.format === "dumb") {
      const out: AdvertisementEvent[] = [];
      if (this.#text !== "") out.push(...this.#dumbLine(this.#text));
      this.#text = "";
      this.#state = "done";
      out.push({ type: "end" });
      return out;
    }
    this.#pkt.end();
    if (this.#state === "start") throw new GitProtocolError("the response is empty: expected a git-upload-pack ref advertisement");
    throw new GitProtocolError("the ref advertisement ended without its final flush packet (truncated response)");
  }

  #pushSmart(chunk: Uint8Array): AdvertisementEvent[] {
    const out: AdvertisementEvent[] = [];
    this.#pkt.feed(chunk);
    while (this.#state !== "done") {
      const pkt = this.#pkt.next();
      if (pkt === undefined) break;
      this.#smartPacket(pkt, out);
    }
    return out;
  }

  #smartPacket(pkt: PktLine, out: AdvertisementEvent[]): void {
    if (pkt.type === "delim" || pkt.type === "response-end") {
      throw new GitProtocolError(`unexpected ${pkt.type} packet in a protocol v0/v1 ref advertisement`);
    }
    if (pkt.type === "flush") {
      if (this.#state === "service-header") {
        this.#state = "first-ref";
      } else if (this.#state === "first-ref" || this.#state === "refs") {
        // A flush right after the header is an empty repository without the capabilities^{} line.
        this.#state = "done";
        out.push({ type: "end" });
      } else {
        throw new GitProtocolError("the response starts with a flush packet: expected '# service=git-upload-pack'");
      }
      return;
    }
    const bytes = pkt.payload;
    // The first ref line carries capabilities after a NUL; everything else is ASCII text.
    const nul = bytes.indexOf(0);
    let text = latin1.decode(nul < 0 ? bytes : bytes.subarray(0, nul));
    if (text.endsWith("\n")) text = text.slice(0, -1);
    if (text.startsWith("ERR ")) throw new GitServerMessageError(utf8.decode(bytes.subarray(4)).trim().slice(0, 500));

    switch (this.#state) {
      case "start":
        if (text.startsWith("# service=")) {
          const service = text.slice("# service=".length);
          if (service !== "git-upload-pack") throw new GitProtocolError(`the server advertises service '${service}', not git-upload-pack`);
          this.#state = "service-header";
          return;
        }
        // Without the service header (a server talking raw upload-pack): the refs start here.
        this.#state = "first-ref";
        this.#smartPacket(pkt, out);
        return;
      case "service-header":
        // Anything between the service line and its flush is ignored, as git does.
        return;
      case "first-ref": {
        if (text === "version 1") return;
        if (text === "version 2") {
          throw new GitProtocolError("the server answered with protocol v2, which was not requested");
        }
        if (nul < 0) throw new GitProtocolError(`the first ref line has no capabilities: ${JSON.stringify(text.slice(0, 80))}`);
        const capText = utf8.decode(bytes.subarray(nul + 1)).replace(/\n$/, "");
        const capabilities = capText.split(" ").filter((c) => c !== "");
        out.push({ type: "capabilities", capabilities, symrefs: symrefsOf(capabilities) });
        this.#state = "refs";
        const ref = parseRefLine(text, " ", undefined);
        // An empty repository advertises only `<zero-oid> capabilities^{}`.
        if (ref.name === "capabilities^{}" && ZERO_OID_RE.test(ref.oid)) return;
        this.#emitRef(ref, out);
        return;
      }
      case "refs": {
        if (nul >= 0) throw new GitProtocolError(`unexpected NUL in a ref line: ${JSON.stringify(text.slice(0, 80))}`);
        if (text.startsWith("shallow ")) return;
        this.#emitRef(parseRefLine(text, " ", undefined), out);
        return;
      }
      case "done":
        return;
    }
  }

  #emitRef(ref: { name: string; oid: string }, out: AdvertisementEvent[]): void {
    const event = refOrPeeled(ref);
    if (event.type === "peeled" && event.name !== this.#lastRef) {
      throw new GitProtocolError(`peeled line for '${event.name}' does not follow its ref`);
    }
    if (event.type === "ref") this.#lastRef = event.name;
    out.push(event);
  }

  #pushDumb(chunk: Uint8Array): AdvertisementEvent[] {
    const out: AdvertisementEvent[] = [];
    this.#text += utf8.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = this.#text.indexOf("\n")) >= 0) {
      const line = this.#text.slice(0, nl);
      this.#text = this.#text.slice(nl + 1);
      out.push(...this.#dumbLine(line));
      this.#dumbOffset += nl + 1;
    }
    if (this.#text.length > MAX_PKT_LENGTH) throw new GitProtocolError("a line of info/refs is too long", this.#dumbOffset);
    return out;
  }

  #dumbLine(line: string): AdvertisementEvent[] {
    const text = line.endsWith("\r") ? line.slice(0, -1) : line;
    if (text === "") return [];
    const event = refOrPeeled(parseRefLine(text, "\t", this.#dumbOffset));
    if (event.type === "ref") this.#lastRef = event.name;
    // A dumb server's peeled line may appear without its tag; keep it anyway (it names the tag).
    return [event];
  }
}

/** A ref with the commit an annotated tag points to. */
interface AdvertisedRef {
  name: string;
  oid: string;
  /** For annotated tags: the object the tag points to (`<name>^{}`). */
  peeled?: string;
}

/** A whole advertisement, collected. */
export interface RefAdvertisement {
  capabilities: string[];
  /** From `symref=` capabilities, e.g. HEAD -> refs/heads/main. */
  symrefs: Map<string, string>;
  refs: AdvertisedRef[];
}

/** Parses a complete advertisement body (for tests and small responses). */
export function parseRefAdvertisement(body: Uint8Array, format: AdvertisementFormat): RefAdvertisement {
  const parser = new RefAdvertisementParser(format);
  const events = [...parser.push(body), ...parser.end()];
  const result: RefAdvertisement = { capabilities: [], symrefs: new Map(), refs: [] };
  const byName = new Map<string, AdvertisedRef>();
  for (const e of events) {
    if (e.type === "capabilities") {
      result.capabilities = [...e.capabilities];
      result.symrefs = new Map(e.symrefs);
    } else if (e.type === "ref") {
      const ref: AdvertisedRef = { name: e.name, oid: e.oid };
      result.refs.push(ref);
      byName.set(e.name, ref);
    } else if (e.type === "peeled") {
      const ref = byName.get(e.name);
      if (ref) ref.peeled = e.oid;
      else {
        const orphan: AdvertisedRef = { name: e.name, oid: e.oid, peeled: e.oid };
        result.refs.push(orphan);
        byName.set(e.name, orphan);
      }
    }
  }
  return result;
}
