import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { isTarHeader, parseNumeric, parsePaxRecords, TarFormatError, TarReader } from "../../src/image/formats/tar-reader.ts";
import { tarBytes } from "./image-formats-tar-fixture.ts";

async function readAllEntries(bytes: Buffer, chunk = 7) {
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunk) chunks.push(bytes.subarray(i, i + chunk));
  const r = new TarReader(Readable.from(chunks));
  const out: Array<{ name: string; kind: string; linkName: string; data: string }> = [];
  for (let e = await r.next(); e; e = await r.next()) {
    const parts: Buffer[] = [];
    for (let c = await r.readData(5); c; c = await r.readData(5)) parts.push(c);
    out.push({ name: e.name, kind: e.kind, linkName: e.linkName, data: Buffer.concat(parts).toString() });
  }
  return out;
}

describe("TarReader", () => {
  it("reads files, dirs, links, ustar prefixes, GNU long names and PAX paths across tiny chunks", async () => {
    const long = `${"d".repeat(80)}/${"e".repeat(60)}/file.txt`;
    const veryLong = `${"x".repeat(120)}/${"y".repeat(120)}`;
    const bytes = tarBytes([
      { name: "./", type: "dir" },
      { name: "./a.txt", data: "alpha" },
      { name: "dir", type: "dir" },
      { name: "dir/link", type: "symlink", linkName: "../a.txt" },
      { name: "dir/hard", type: "hardlink", linkName: "a.txt" },
      { name: long, data: "prefixed" },
      { name: veryLong, data: "gnu", longName: "gnu" },
      { name: `${veryLong}-pax`, data: "pax", longName: "pax" },
      { name: "empty", data: "" },
    ]);
    expect(await readAllEntries(bytes)).toEqual([
      { name: "", kind: "directory", linkName: "", data: "" },
      { name: "a.txt", kind: "file", linkName: "", data: "alpha" },
      { name: "dir", kind: "directory", linkName: "", data: "" },
      { name: "dir/link", kind: "symlink", linkName: "../a.txt", data: "" },
      { name: "dir/hard", kind: "hardlink", linkName: "a.txt", data: "" },
      { name: long, kind: "file", linkName: "", data: "prefixed" },
      { name: veryLong, kind: "file", linkName: "", data: "gnu" },
      { name: `${veryLong}-pax`, kind: "file", linkName: "", data: "pax" },
      { name: "empty", kind: "file", linkName: "", data: "" },
    ]);
  });

  it("skips unread data when moving to the next entry", async () => {
    const r = new TarReader(
      Readable.from([
        tarBytes([
          { name: "a", data: "x".repeat(1000) },
          { name: "b", data: "y" },
        ]),
      ]),
    );
    expect((await r.next())?.name).toBe("a");
    expect((await r.next())?.name).toBe("b");
    expect((await r.readAll(10)).toString()).toBe("y");
    expect(await r.next()).toBeUndefined();
  });

  it("reports the data offset of each entry", async () => {
    const bytes = tarBytes([
      { name: "a", data: "x".repeat(600) },
      { name: "b", data: "hello" },
    ]);
    const r = new TarReader(Readable.from([bytes]));
    const a = await r.next();
    const b = await r.next();
    expect(a?.dataOffset).toBe(512);
    expect(b?.dataOffset).toBe(512 + 1024 + 512);
    expect(bytes.subarray(b!.dataOffset, b!.dataOffset + 5).toString()).toBe("hello");
  });

  it("reads what GNU tar writes (posix and gnu formats, long names)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tar-reader-"));
    try {
      const deep = join(dir, "src", "a".repeat(90), "b".repeat(90));
      mkdirSync(deep, { recursive: true });
      writeFileSync(join(deep, "c".repeat(100)), "deep");
      writeFileSync(join(dir, "src", "top"), "top");
      for (const format of ["posix", "gnu"]) {
        const out = execFileSync("/bin/tar", ["--sort=name", `--format=${format}`, "-C", join(dir, "src"), "-cf", "-", "."]);
        const entries = await readAllEntries(out, 4096);
        expect(entries.filter((e) => e.kind === "file").map((e) => [e.name, e.data])).toEqual([
          [`${"a".repeat(90)}/${"b".repeat(90)}/${"c".repeat(100)}`, "deep"],
          ["top", "top"],
        ]);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rejects garbage, empty input and truncation", async () => {
    await expect(new TarReader(Readable.from([Buffer.from("x".repeat(600))])).next()).rejects.toThrow(TarFormatError);
    await expect(new TarReader(Readable.from([])).next()).rejects.toThrow(/empty input/);
    const cut = tarBytes([{ name: "a", data: "x".repeat(2000) }]).subarray(0, 1200);
    const r = new TarReader(Readable.from([cut]));
    await r.next();
    await expect(r.readAll(10_000)).rejects.toThrow(TarFormatError);
  });
});

describe("tar fields", () => {
  it("parses octal and base-256 numbers", () => {
    const b = Buffer.alloc(12);
    b.write("00000001750\0", 0, "latin1");
    expect(parseNumeric(b, 0, 12)).toBe(0o1750);
    const big = Buffer.alloc(12);
    big[0] = 0x80;
    big.writeUIntBE(10 * 1024 ** 3, 6, 6);
    expect(parseNumeric(big, 0, 12)).toBe(10 * 1024 ** 3);
  });
  it("checks header checksums", () => {
    const h = tarBytes([{ name: "a", data: "b" }]).subarray(0, 512);
    expect(isTarHeader(h)).toBe(true);
    const bad = Buffer.from(h);
    bad[0] = 0x62;
    expect(isTarHeader(bad)).toBe(false);
  });
  it("parses pax records", () => {
    expect(parsePaxRecords(Buffer.from("12 path=abc\n16 linkpath=x=y\n"))).toEqual(
      new Map([
        ["path", "abc"],
        ["linkpath", "x=y"],
      ]),
    );
    expect(() => parsePaxRecords(Buffer.from("99 path=abc\n"))).toThrow(TarFormatError);
  });
});
