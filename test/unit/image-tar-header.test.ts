import { describe, expect, it } from "vitest";
import { encodeEntryHeader, endOfArchive, paddingFor, paxRecord } from "../../src/image/tar-header.ts";

function checksumOk(block: Buffer): boolean {
  const stored = parseInt(block.subarray(148, 154).toString("latin1"), 8);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return stored === sum;
}

describe("paxRecord", () => {
  it.each([
    ["path", "a", "9 path=a\n"],
    // 10 bytes without the length digits: 1 digit would give 11 (2 digits) -> 12.
    ["path", "abc", "12 path=abc\n"],
    ["path", "x".repeat(90), `99 path=${"x".repeat(90)}\n`],
    ["path", "x".repeat(91), `101 path=${"x".repeat(91)}\n`],
  ])("%s=%s has a self-consistent length", (key, value, expected) => {
    const rec = paxRecord(key, Buffer.from(value)).toString("latin1");
    expect(rec).toBe(expected);
    expect(Number(rec.split(" ")[0])).toBe(Buffer.byteLength(rec));
  });
});

describe("encodeEntryHeader", () => {
  it("encodes a short file name in one block with a valid checksum", () => {
    const h = encodeEntryHeader({ name: Buffer.from("nix/store/x"), type: "file", mode: 0o100555, size: 10, mtime: 1 });
    expect(h.length).toBe(512);
    expect(checksumOk(h)).toBe(true);
    expect(h.subarray(100, 108).toString("latin1")).toBe("0000555\0"); // file type bits dropped
    expect(h.subarray(124, 136).toString("latin1")).toBe("00000000012\0");
  });

  it("adds a trailing slash to directories and writes size 0", () => {
    const h = encodeEntryHeader({ name: Buffer.from("nix/store/d"), type: "directory", mode: 0o555, size: 4096, mtime: 1 });
    expect(h.subarray(0, 12).toString("latin1")).toBe("nix/store/d/");
    expect(h.subarray(124, 136).toString("latin1")).toBe("00000000000\0");
    expect(h[156]).toBe(0x35);
  });

  it("puts long names and link targets into one pax header before the entry", () => {
    const name = Buffer.from(`nix/store/${"n".repeat(120)}`);
    const target = Buffer.from("t".repeat(200));
    const h = encodeEntryHeader({ name, type: "symlink", mode: 0o777, size: 0, linkName: target, mtime: 1 });
    expect(h.length % 512).toBe(0);
    expect(h[156]).toBe(0x78); // 'x'
    expect(checksumOk(h.subarray(0, 512))).toBe(true);
    const paxSize = parseInt(h.subarray(124, 135).toString("latin1"), 8);
    const pax = h.subarray(512, 512 + paxSize).toString("latin1");
    expect(pax).toContain(` path=${name.toString()}\n`);
    expect(pax).toContain(` linkpath=${target.toString()}\n`);
    const main = h.subarray(h.length - 512);
    expect(checksumOk(main)).toBe(true);
    expect(main[156]).toBe(0x32);
    expect(main.subarray(0, 100).equals(name.subarray(0, 100))).toBe(true);
  });

  it("uses a pax size record for files of 8 GiB and more", () => {
    const size = 8 * 1024 ** 3;
    const h = encodeEntryHeader({ name: Buffer.from("nix/store/big"), type: "file", mode: 0o444, size, mtime: 1 });
    expect(h.toString("latin1")).toContain(` size=${size}\n`);
  });

  it("rejects bad input", () => {
    expect(() => encodeEntryHeader({ name: Buffer.alloc(0), type: "file", mode: 0, size: 0, mtime: 1 })).toThrow(/empty/);
    expect(() => encodeEntryHeader({ name: Buffer.from("a\0b"), type: "file", mode: 0, size: 0, mtime: 1 })).toThrow(/NUL/);
    expect(() => encodeEntryHeader({ name: Buffer.from("a"), type: "file", mode: 0, size: 0, mtime: -1 })).toThrow(/mtime/);
    expect(() => encodeEntryHeader({ name: Buffer.from("a"), type: "symlink", mode: 0, size: 0, mtime: 1 })).toThrow(/target/);
  });
});

describe("padding and end marker", () => {
  it.each([
    [0, 0],
    [1, 511],
    [512, 0],
    [513, 511],
  ])("%i bytes need %i bytes of padding", (size, pad) => expect(paddingFor(size)).toBe(pad));

  it("ends with two zero blocks", () => expect(endOfArchive().equals(Buffer.alloc(1024))).toBe(true));
});
