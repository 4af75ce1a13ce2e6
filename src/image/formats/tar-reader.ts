// A pull-based streaming tar reader: headers are parsed one at a time and an entry's data is read
// in chunks straight from the source, so a multi-GB layer inside a docker-archive is never held in
// memory. Understands ustar (name prefix), GNU long names/links (`L`/`K`), PAX extended headers
// (`x`; `g` is skipped), base-256 sizes, and verifies each header checksum.
import { open, type FileHandle } from "node:fs/promises";
import type { Readable } from "node:stream";

export const TAR_BLOCK = 512;

type TarEntryKind = "file" | "directory" | "symlink" | "hardlink" | "other";

export interface TarEntryInfo {
  /** Entry name with any leading `./` removed (directories keep their trailing `/` removed too). */
  name: string;
  kind: TarEntryKind;
  size: number;
  mode: number;
  linkName: string;
  /** Byte offset of the entry's data in the (uncompressed) archive. */
  dataOffset: number;
}

export class TarFormatError extends Error {
  override name = "TarFormatError";
}

/** Sequential byte access as the tar reader needs it. */
export interface ByteSource {
  /** Bytes handed out (or skipped) so far. */
  readonly position: number;
  /** Exactly n bytes, or undefined when the source ends first. */
  readExact(n: number): Promise<Buffer | undefined>;
  /** 1..max bytes, or undefined at the end. */
  readSome(max: number): Promise<Buffer | undefined>;
  /** Discards n bytes; false when the source ended first. */
  discard(n: number): Promise<boolean>;
  close(): Promise<void>;
}

/** Reads bytes from an async chunk source with exact-size and bounded reads. */
class ByteReader implements ByteSource {
  private readonly source: AsyncIterator<Buffer | string>;
  private pending: Buffer = Buffer.alloc(0);
  private ended = false;
  /** Bytes handed out so far. */
  position = 0;

  constructor(source: AsyncIterable<Buffer | string> | Readable) {
    this.source = (source as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const r = await this.source.next();
    if (r.done) {
      this.ended = true;
      return false;
    }
    const chunk = typeof r.value === "string" ? Buffer.from(r.value) : r.value;
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    return true;
  }

  /** Exactly n bytes, or undefined when the source ends first (partial bytes are lost). */
  async readExact(n: number): Promise<Buffer | undefined> {
    while (this.pending.length < n) {
      if (!(await this.fill())) return undefined;
    }
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    this.position += n;
    return out;
  }

  /** 1..max bytes (whatever is buffered or arrives next), or undefined at the end. */
  async readSome(max: number): Promise<Buffer | undefined> {
    if (this.pending.length === 0 && !(await this.fill())) return undefined;
    const n = Math.min(max, this.pending.length);
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    this.position += n;
    return out;
  }

  /** Discards n bytes; false when the source ended first. */
  async discard(n: number): Promise<boolean> {
    let left = n;
    while (left > 0) {
      const chunk = await this.readSome(left);
      if (!chunk) return false;
      left -= chunk.length;
    }
    return true;
  }

  /** Closes the underlying iterator (destroys a Readable source). */
  async close(): Promise<void> {
    await this.source.return?.();
  }
}

function cString(block: Buffer, offset: number, length: number): string {
  const field = block.subarray(offset, offset + length);
  const nul = field.indexOf(0);
  return (nul >= 0 ? field.subarray(0, nul) : field).toString("utf8");
}

/** Octal (NUL/space terminated) or GNU base-256 numeric field. */
export function parseNumeric(block: Buffer, offset: number, length: number): number {
  const field = block.subarray(offset, offset + length);
  if (field.length > 0 && (field[0]! & 0x80) !== 0) {
    if ((field[0]! & 0x40) !== 0) throw new TarFormatError("tar: negative base-256 number");
    let value = field[0]! & 0x3f;
    for (let i = 1; i < field.length; i++) {
      value = value * 256 + field[i]!;
      if (!Number.isSafeInteger(value)) throw new TarFormatError("tar: number too large");
    }
    return value;
  }
  const text = field
    .toString("latin1")
    .replace(/[\0 ]+$/g, "")
    .replace(/^[\0 ]+/, "");
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`tar: bad numeric field ${JSON.stringify(text.slice(0, 20))}`);
  return parseInt(text, 8);
}

/** Whether a 512-byte block is a tar header with a correct checksum (signed or unsigned sum). */
export function isTarHeader(block: Buffer): boolean {
  if (block.length < TAR_BLOCK) return false;
  let stored: number;
  try {
    stored = parseNumeric(block, 148, 8);
  } catch {
    return false;
  }
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < TAR_BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return stored === unsigned || stored === signed;
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

/** PAX records `"<len> key=value\n"` -> map. */
export function parsePaxRecords(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space < 0) break;
    const len = Number(data.subarray(pos, space).toString("latin1"));
    if (!Number.isSafeInteger(len) || len <= 0 || pos + len > data.length) throw new TarFormatError("tar: bad pax record");
    const record = data.subarray(space + 1, pos + len - 1); // without the trailing newline
    const eq = record.indexOf(0x3d);
    if (eq > 0) out.set(record.subarray(0, eq).toString("utf8"), record.subarray(eq + 1).toString("utf8"));
    pos += len;
  }
  return out;
}

/**
 * Positional reads of a file: `discard` only moves the position, so walking a tar's headers costs
 * one small read per entry however large the entries are.
 */
export class FileByteSource implements ByteSource {
  private readonly handle: FileHandle;
  private readonly size: number;
  position = 0;

  private constructor(handle: FileHandle, size: number) {
    this.handle = handle;
    this.size = size;
  }

  static async open(path: string): Promise<FileByteSource> {
    const handle = await open(path, "r");
    try {
      const st = await handle.stat();
      return new FileByteSource(handle, st.size);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  async readExact(n: number): Promise<Buffer | undefined> {
    if (this.position + n > this.size) return undefined;
    const buf = Buffer.alloc(n);
    let got = 0;
    while (got < n) {
      const { bytesRead } = await this.handle.read(buf, got, n - got, this.position + got);
      if (bytesRead === 0) return undefined;
      got += bytesRead;
    }
    this.position += n;
    return buf;
  }

  async readSome(max: number): Promise<Buffer | undefined> {
    const n = Math.min(max, this.size - this.position);
    if (n <= 0) return undefined;
    return this.readExact(n);
  }

  /** Back to the start of the file. */
  rewind(): void {
    this.position = 0;
  }

  async discard(n: number): Promise<boolean> {
    if (this.position + n > this.size) {
      this.position = this.size;
      return false;
    }
    this.position += n;
    return true;
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => undefined);
  }
}

function isByteSource(v: unknown): v is ByteSource {
  return typeof v === "object" && v !== null && typeof (v as ByteSource).readExact === "function" && typeof (v as ByteSource).discard === "function";
}

export function normaliseEntryName(name: string): string {
  let n = name;
  while (n.startsWith("./")) n = n.slice(2);
  while (n.startsWith("/")) n = n.slice(1);
  if (n.endsWith("/")) n = n.replace(/\/+$/, "");
  return n;
}

const metaLimit = 1024 * 1024;

/**
 * Iterates the entries of a tar stream. After `next()` returns an entry, its data must be read
 * through `readData`/`skipData` (or is skipped by the following `next()`).
 */
export class TarReader {
  readonly bytes: ByteSource;
  private remaining = 0;
  private padding = 0;
  private done = false;
  /** Entries read so far (for error messages). */
  count = 0;

  constructor(source: AsyncIterable<Buffer | string> | Readable | ByteSource) {
    this.bytes = isByteSource(source) ? source : new ByteReader(source);
  }

  /** Bytes of the current entry not read yet. */
  get dataRemaining(): number {
    return this.remaining;
  }

  async next(): Promise<TarEntryInfo | undefined> {
    if (this.done) return undefined;
    await this.skipData();
    if (this.padding > 0) {
      if (!(await this.bytes.discard(this.padding))) throw new TarFormatError("tar: archive ends inside entry padding");
      this.padding = 0;
    }
    let longName: string | undefined;
    let longLink: string | undefined;
    let pax = new Map<string, string>();
    for (;;) {
      const block = await this.bytes.readExact(TAR_BLOCK);
      if (!block) {
        // No end-of-archive marker: accept only when nothing at all was read (empty input is an error).
        if (this.count === 0) throw new TarFormatError("tar: empty input, not a tar archive");
        this.done = true;
        return undefined;
      }
      if (isZeroBlock(block)) {
        this.done = true;
        return undefined;
      }
      if (!isTarHeader(block)) {
        throw new TarFormatError(
          `tar: bad header checksum at byte ${this.bytes.position - TAR_BLOCK} (entry ${this.count + 1}): not a tar archive or corrupted`,
        );
      }
      const typeFlag = String.fromCharCode(block[156]!);
      let size = parseNumeric(block, 124, 12);
      if (typeFlag === "L" || typeFlag === "K" || typeFlag === "x" || typeFlag === "g") {
        if (size > metaLimit) throw new TarFormatError(`tar: ${typeFlag} header of ${size} bytes is too large`);
        const data = await this.bytes.readExact(size);
        if (!data) throw new TarFormatError("tar: archive ends inside an extended header");
        const pad = (TAR_BLOCK - (size % TAR_BLOCK)) % TAR_BLOCK;
        if (!(await this.bytes.discard(pad))) throw new TarFormatError("tar: archive ends inside an extended header");
        if (typeFlag === "L") longName = cString(data, 0, data.length);
        else if (typeFlag === "K") longLink = cString(data, 0, data.length);
        else if (typeFlag === "x") pax = parsePaxRecords(data);
        continue; // the real header follows
      }
      let name = cString(block, 0, 100);
      // POSIX ustar ("ustar\0"): a name prefix; GNU ("ustar  \0") uses that area for other fields.
      if (block.subarray(257, 263).toString("latin1") === "ustar\u0000") {
        const prefix = cString(block, 345, 155);
        if (prefix !== "") name = `${prefix}/${name}`;
      }
      let linkName = cString(block, 157, 100);
      if (longName !== undefined) name = longName;
      if (longLink !== undefined) linkName = longLink;
      const paxPath = pax.get("path");
      if (paxPath !== undefined) name = paxPath;
      const paxLink = pax.get("linkpath");
      if (paxLink !== undefined) linkName = paxLink;
      const paxSize = pax.get("size");
      if (paxSize !== undefined) {
        const n = Number(paxSize);
        if (!Number.isSafeInteger(n) || n < 0) throw new TarFormatError("tar: bad pax size");
        size = n;
      }
      let kind: TarEntryKind;
      switch (typeFlag) {
        case "0":
        case "\0":
        case "7":
          kind = "file";
          break;
        case "5":
          kind = "directory";
          break;
        case "2":
          kind = "symlink";
          break;
        case "1":
          kind = "hardlink";
          break;
        default:
          kind = "other";
      }
      if (name.endsWith("/") && kind === "file") kind = "directory";
      // Only regular files (and unknown types, to skip them) carry data.
      const dataSize = kind === "file" || kind === "other" ? size : 0;
      this.remaining = dataSize;
      this.padding = (TAR_BLOCK - (dataSize % TAR_BLOCK)) % TAR_BLOCK;
      this.count++;
      return {
        name: normaliseEntryName(name),
        kind,
        size: dataSize,
        mode: parseNumeric(block, 100, 8) & 0o7777,
        linkName,
        dataOffset: this.bytes.position,
      };
    }
  }

  /** Up to `max` bytes of the current entry's data; undefined once it is all read. */
  async readData(max = 1024 * 1024): Promise<Buffer | undefined> {
    if (this.remaining === 0) return undefined;
    const chunk = await this.bytes.readSome(Math.min(max, this.remaining));
    if (!chunk) throw new TarFormatError(`tar: archive ends inside an entry (${this.remaining} bytes missing)`);
    this.remaining -= chunk.length;
    return chunk;
  }

  /** The whole current entry (for small metadata files); refuses more than `limit` bytes. */
  async readAll(limit: number): Promise<Buffer> {
    if (this.remaining > limit) throw new TarFormatError(`tar: entry of ${this.remaining} bytes is larger than ${limit}`);
    const data = await this.bytes.readExact(this.remaining);
    if (!data) throw new TarFormatError("tar: archive ends inside an entry");
    this.remaining = 0;
    return Buffer.from(data);
  }

  async skipData(): Promise<void> {
    if (this.remaining === 0) return;
    if (!(await this.bytes.discard(this.remaining))) throw new TarFormatError("tar: archive ends inside an entry");
    this.remaining = 0;
  }

  async close(): Promise<void> {
    await this.bytes.close();
  }
}
