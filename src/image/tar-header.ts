// Pure encoding of tar headers (POSIX ustar + pax extended headers) for deterministic layers.
// Every field that could carry time, owner names or host details is fixed: uid/gid 0, empty
// uname/gname, a caller-chosen mtime, no atime/ctime in pax records.

const BLOCK_SIZE = 512;

/** Largest value an 11-digit octal field (size, mtime) can hold. */
const MAX_OCTAL_11 = 0o77777777777;

type TarEntryType = "file" | "directory" | "symlink";

export interface TarEntryHeader {
  /** Entry name as raw bytes (no leading `/`); directories get a trailing `/` added here. */
  name: Buffer;
  type: TarEntryType;
  /** Permission bits (0o7777 is kept, the file type bits are ignored). */
  mode: number;
  /** Content size for files; 0 otherwise. */
  size: number;
  /** Symlink target as raw bytes. */
  linkName?: Buffer;
  /** Seconds since the epoch. */
  mtime: number;
}

const typeFlags: Record<TarEntryType | "pax", number> = {
  file: 0x30, // '0'
  directory: 0x35, // '5'
  symlink: 0x32, // '2'
  pax: 0x78, // 'x'
};

function writeOctal(block: Buffer, offset: number, width: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`tar: bad numeric field ${value}`);
  const digits = value.toString(8).padStart(width - 1, "0");
  if (digits.length > width - 1) throw new Error(`tar: ${value} does not fit a ${width}-byte field`);
  block.write(digits, offset, width - 1, "latin1");
  block[offset + width - 1] = 0;
}

function writeBytes(block: Buffer, offset: number, width: number, value: Buffer): void {
  if (value.length > width) throw new Error("tar: field overflow");
  value.copy(block, offset);
}

/** One pax record `"<len> key=value\n"` where len counts the whole record, its own digits included. */
export function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, "latin1"), value, Buffer.from("\n", "latin1")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len), "latin1"), body]);
}

function headerBlock(fields: { name: Buffer; mode: number; size: number; mtime: number; typeFlag: number; linkName: Buffer }): Buffer {
  const block = Buffer.alloc(BLOCK_SIZE, 0);
  writeBytes(block, 0, 100, fields.name);
  writeOctal(block, 100, 8, fields.mode);
  writeOctal(block, 108, 8, 0); // uid
  writeOctal(block, 116, 8, 0); // gid
  writeOctal(block, 124, 12, fields.size);
  writeOctal(block, 136, 12, fields.mtime);
  block.fill(0x20, 148, 156); // checksum placeholder: spaces
  block[156] = fields.typeFlag;
  writeBytes(block, 157, 100, fields.linkName);
  block.write("ustar\u000000", 257, 8, "latin1"); // magic "ustar\0" + version "00"
  // uname (265, 32) and gname (297, 32) stay empty.
  writeOctal(block, 329, 8, 0); // devmajor
  writeOctal(block, 337, 8, 0); // devminor
  // prefix (345, 155) stays empty: long names go into pax records instead.
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(sum.toString(8).padStart(6, "0"), 148, 6, "latin1");
  block[154] = 0;
  block[155] = 0x20;
  return block;
}

/** Bytes of padding after `size` bytes of content so the next header starts on a block boundary. */
export function paddingFor(size: number): number {
  const rest = size % BLOCK_SIZE;
  return rest === 0 ? 0 : BLOCK_SIZE - rest;
}

/** A deterministic, short name for the pax header entry of `name` (readers ignore it). */
function paxHeaderName(name: Buffer): Buffer {
  const trimmed = name[name.length - 1] === 0x2f ? name.subarray(0, name.length - 1) : name;
  const slash = trimmed.lastIndexOf(0x2f);
  const base = slash >= 0 ? trimmed.subarray(slash + 1) : trimmed;
  const prefix = Buffer.from("PaxHeaders/", "latin1");
  return Buffer.concat([prefix, base.subarray(0, 100 - prefix.length)]);
}

/**
 * The header block(s) of one entry: a pax extended header first when the name or link target
 * does not fit ustar's 100-byte fields or the size does not fit 11 octal digits, then the ustar
 * header (with truncated name/link fields, which pax-aware readers override).
 */
export function encodeEntryHeader(entry: TarEntryHeader): Buffer {
  if (entry.name.length === 0) throw new Error("tar: empty entry name");
  if (entry.name.includes(0)) throw new Error("tar: NUL byte in entry name");
  if (entry.mtime < 0 || entry.mtime > MAX_OCTAL_11 || !Number.isInteger(entry.mtime)) {
    throw new Error(`tar: mtime ${entry.mtime} out of range`);
  }
  const name = entry.type === "directory" && entry.name[entry.name.length - 1] !== 0x2f ? Buffer.concat([entry.name, Buffer.from("/", "latin1")]) : entry.name;
  const linkName = entry.type === "symlink" ? (entry.linkName ?? Buffer.alloc(0)) : Buffer.alloc(0);
  if (entry.type === "symlink" && linkName.length === 0) throw new Error("tar: symlink without target");
  const size = entry.type === "file" ? entry.size : 0;

  const records: Buffer[] = [];
  if (name.length > 100) records.push(paxRecord("path", name));
  if (linkName.length > 100) records.push(paxRecord("linkpath", linkName));
  if (size > MAX_OCTAL_11) records.push(paxRecord("size", Buffer.from(String(size), "latin1")));

  const main = headerBlock({
    name: name.subarray(0, 100),
    mode: entry.mode & 0o7777,
    size: Math.min(size, MAX_OCTAL_11),
    mtime: entry.mtime,
    typeFlag: typeFlags[entry.type],
    linkName: linkName.subarray(0, 100),
  });
  if (records.length === 0) return main;

  const pax = Buffer.concat(records);
  const paxHeader = headerBlock({
    name: paxHeaderName(name),
    mode: 0o644,
    size: pax.length,
    mtime: entry.mtime,
    typeFlag: typeFlags.pax,
    linkName: Buffer.alloc(0),
  });
  return Buffer.concat([paxHeader, pax, Buffer.alloc(paddingFor(pax.length), 0), main]);
}

/** The end-of-archive marker: two zero blocks. */
export function endOfArchive(): Buffer {
  return Buffer.alloc(2 * BLOCK_SIZE, 0);
}
