import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, linkSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { tarStorePathChunks, tarStorePaths } from "../../src/image/tar-writer.ts";

const roots: string[] = [];
afterAll(() => {
  for (const r of roots) {
    execFileSync("chmod", ["-R", "u+w", r]);
    rmSync(r, { recursive: true, force: true });
  }
});

function tempRoot(): string {
  const r = mkdtempSync(join(tmpdir(), "tar-writer-test-"));
  roots.push(r);
  mkdirSync(join(r, "nix/store"), { recursive: true });
  return r;
}

const H1 = "0123456789abcdfghijklmnpqrsvwxyz";
const H2 = "1123456789abcdfghijklmnpqrsvwxyz";
const H3 = "2123456789abcdfghijklmnpqrsvwxyz";
const longDir = "d".repeat(90);
const longFile = "f".repeat(120);
const longTarget = `/nix/store/${H1}-lib/${"t".repeat(150)}`;

/** A small fake store: a lib with a long name and nested dirs, an app with symlinks and a hardlink, a single-file path. */
function makeStore(root: string, order: "forward" | "reverse" = "forward"): string[] {
  const s = (p: string) => join(root, "nix/store", p);
  const steps: (() => void)[] = [
    () => {
      mkdirSync(s(`${H1}-lib/lib/${longDir}`), { recursive: true });
      writeFileSync(s(`${H1}-lib/lib/libfoo.so`), Buffer.alloc(1000, 7));
      writeFileSync(s(`${H1}-lib/lib/${longDir}/${longFile}`), "long name content\n");
      writeFileSync(s(`${H1}-lib/lib/empty`), "");
      writeFileSync(s(`${H1}-lib/lib/${"t".repeat(150)}`), "target\n");
    },
    () => {
      mkdirSync(s(`${H2}-app/bin`), { recursive: true });
      writeFileSync(s(`${H2}-app/bin/app`), "#!/bin/sh\necho hi\n");
      chmodSync(s(`${H2}-app/bin/app`), 0o555);
      writeFileSync(s(`${H2}-app/bin/zz-data`), Buffer.alloc(512, 1)); // exactly one block
      linkSync(s(`${H2}-app/bin/app`), s(`${H2}-app/bin/app-hardlink`));
      symlinkSync("app", s(`${H2}-app/bin/app-link`));
      symlinkSync(longTarget, s(`${H2}-app/long-link`));
      symlinkSync("/nonexistent/dangling", s(`${H2}-app/dangling`));
      mkdirSync(s(`${H2}-app/share/B`), { recursive: true });
      mkdirSync(s(`${H2}-app/share/a`), { recursive: true });
      writeFileSync(s(`${H2}-app/share/B/x`), "B");
      writeFileSync(s(`${H2}-app/share/a/x`), "a");
    },
    () => {
      writeFileSync(s(`${H3}-script.sh`), "echo single file\n");
      chmodSync(s(`${H3}-script.sh`), 0o444);
    },
  ];
  for (const step of order === "forward" ? steps : [...steps].reverse()) step();
  return [`/nix/store/${H2}-app`, `/nix/store/${H3}-script.sh`, `/nix/store/${H1}-lib`];
}

async function tarBytes(paths: string[], root: string, extra: { mtime?: number; readChunkBytes?: number } = {}): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of tarStorePaths(paths, { readRoot: root, ...extra })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function writeTar(bytes: Buffer): string {
  const dir = mkdtempSync(join(tmpdir(), "tar-writer-out-"));
  roots.push(dir);
  const file = join(dir, "layer.tar");
  writeFileSync(file, bytes);
  return file;
}

describe("tarStorePaths", () => {
  it("gives the same bytes for the same store paths, whatever the creation order, times or input order", async () => {
    const a = tempRoot();
    const b = tempRoot();
    const paths = makeStore(a, "forward");
    makeStore(b, "reverse");
    utimesSync(join(b, "nix/store", `${H2}-app/bin/app`), new Date("2020-01-01"), new Date("2021-01-01"));
    const one = await tarBytes(paths, a);
    const two = await tarBytes([...paths].reverse(), b);
    const three = await tarBytes([...paths, paths[0]!], a, { readChunkBytes: 7 });
    expect(sha(two)).toBe(sha(one));
    expect(sha(three)).toBe(sha(one));
    expect(one.length % 512).toBe(0);
    expect(one.subarray(one.length - 1024).equals(Buffer.alloc(1024))).toBe(true);
  });

  it("lists with GNU tar: parents once, sorted entries, uid/gid 0, fixed mtime, modes, symlinks, long names", async () => {
    const root = tempRoot();
    const paths = makeStore(root);
    const file = writeTar(await tarBytes(paths, root, { mtime: 1 }));
    const listing = execFileSync("tar", ["--numeric-owner", "--full-time", "-tvf", file], { env: { ...process.env, TZ: "UTC" } })
      .toString()
      .trim()
      .split("\n")
      .map((l) => l.replace(/\s+/g, " "));
    const app = `nix/store/${H2}-app`;
    const lib = `nix/store/${H1}-lib`;
    expect(listing).toEqual([
      "drwxr-xr-x 0/0 0 1970-01-01 00:00:01 nix/",
      "drwxr-xr-x 0/0 0 1970-01-01 00:00:01 nix/store/",
      `drwxr-xr-x 0/0 0 1970-01-01 00:00:01 ${lib}/`,
      `drwxr-xr-x 0/0 0 1970-01-01 00:00:01 ${lib}/lib/`,
      `drwxr-xr-x 0/0 0 1970-01-01 00:00:01 ${lib}/lib/${longDir}/`,
      `-rw-r--r-- 0/0 18 1970-01-01 00:00:01 ${lib}/lib/${longDir}/${longFile}`,
      `-rw-r--r-- 0/0 0 1970-01-01 00:00:01 ${lib}/lib/empty`,
      `-rw-r--r-- 0/0 1000 1970-01-01 00:00:01 ${lib}/lib/libfoo.so`,
      `-rw-r--r-- 0/0 7 1970-01-01 00:00:01 ${lib}/lib/${"t".repeat(150)}`,
      `drwxr-xr-x 0/0 0 1970-01-01 00:00:01 ${app}/`,
      `drwxr-xr-x 0/0 0 1970-01-01 00:00:01 ${app}/bin/`,
      `-r-xr-xr-x 0/0 18 1970-01-01 00:00:01 ${app}/bin/app`,
      `-r-xr-xr-x 0/0 18 1970-01-01 00:00:01 ${app}/bin/app-hardlink`,
      `lrwxrwxrwx 0/0 0 1970-01-01 00:00:01 ${app}/bin/app-link -> app`,
      `-rw-r--r-- 0/0 512 1970-01-01 00:00:01 ${app}/bin/zz-data`,
      `lrwxrwxrwx 0/0 0 1970-01-01 00:00:01 ${app}/dangling -> /nonexistent/dangling`,
      `lrwxrwxrwx 0/0 0 1970-01-01 00:00:01 ${app}/long-link -> ${longTarget}`,
      `drwxr-xr-x 0/0 0 1970-01-01 00:00:01 ${app}/share/`,
      `drwxr-xr-x 0/0 0 1970-01-01 00:00:01 ${app}/share/B/`,
      `-rw-r--r-- 0/0 1 1970-01-01 00:00:01 ${app}/share/B/x`,
      `drwxr-xr-x 0/0 0 1970-01-01 00:00:01 ${app}/share/a/`,
      `-rw-r--r-- 0/0 1 1970-01-01 00:00:01 ${app}/share/a/x`,
      `-r--r--r-- 0/0 17 1970-01-01 00:00:01 nix/store/${H3}-script.sh`,
    ]);
  });

  it("extracts with GNU tar to the same content (hardlinks as full files, symlink targets kept)", async () => {
    const root = tempRoot();
    const paths = makeStore(root);
    const file = writeTar(await tarBytes(paths, root));
    const out = mkdtempSync(join(tmpdir(), "tar-writer-x-"));
    roots.push(out);
    execFileSync("tar", ["-xf", file, "-C", out]);
    execFileSync("diff", ["-r", "--no-dereference", join(root, "nix"), join(out, "nix")]);
    expect(readlinkSync(join(out, "nix/store", `${H2}-app/long-link`))).toBe(longTarget);
    const a = join(out, "nix/store", `${H2}-app/bin/app`);
    expect(readFileSync(a, "utf8")).toBe("#!/bin/sh\necho hi\n");
    expect(readFileSync(`${a}-hardlink`, "utf8")).toBe("#!/bin/sh\necho hi\n");
  });

  it("writes ustar headers with empty owner names, zero ids and the given mtime", async () => {
    const root = tempRoot();
    const paths = makeStore(root);
    const bytes = await tarBytes([paths[1]!], root, { mtime: 1234567 });
    // Third header: the single-file store path (after nix/ and nix/store/).
    const h = bytes.subarray(1024, 1536);
    expect(h.subarray(0, 100).toString("latin1").replace(/\0+$/, "")).toBe(`nix/store/${H3}-script.sh`);
    expect(h.subarray(108, 116).toString("latin1")).toBe("0000000\0");
    expect(h.subarray(116, 124).toString("latin1")).toBe("0000000\0");
    expect(h.subarray(136, 148).toString("latin1")).toBe(`${(1234567).toString(8).padStart(11, "0")}\0`);
    expect(h.subarray(257, 265).toString("latin1")).toBe("ustar\u000000");
    expect(h.subarray(265, 329).equals(Buffer.alloc(64))).toBe(true); // uname, gname
    expect(h[156]).toBe(0x30);
  });

  it("uses a pax header for names over 100 bytes", async () => {
    const root = tempRoot();
    const paths = makeStore(root);
    const bytes = await tarBytes([paths[2]!], root);
    const text = bytes.toString("latin1");
    const name = `nix/store/${H1}-lib/lib/${longDir}/${longFile}`;
    const record = ` path=${name}\n`;
    const len = String(record.length + 3); // a 3-digit length
    expect(text).toContain(`${len}${record}`);
    expect(Number(len)).toBe(len.length + record.length);
  });

  it("streams: chunks stay bounded and nothing is read before it is pulled", async () => {
    const root = tempRoot();
    mkdirSync(join(root, "nix/store", `${H1}-big`));
    writeFileSync(join(root, "nix/store", `${H1}-big/blob`), Buffer.alloc(8 * 1024 * 1024, 3));
    let max = 0;
    let total = 0;
    for await (const c of tarStorePathChunks([`/nix/store/${H1}-big`], { readRoot: root, readChunkBytes: 256 * 1024 })) {
      max = Math.max(max, c.length);
      total += c.length;
    }
    expect(max).toBeLessThanOrEqual(256 * 1024 + 64 * 1024);
    expect(total).toBe(512 * 4 + 8 * 1024 * 1024 + 1024);
  });

  it("rejects paths outside the store and special files, and reports a missing path", async () => {
    const root = tempRoot();
    await expect(tarBytes(["/etc/passwd"], root)).rejects.toThrow(/not a store path/);
    await expect(tarBytes(["/nix/store/../etc"], root)).rejects.toThrow(/not a store path/);
    await expect(tarBytes(["/nix/store/"], root)).rejects.toThrow(/not a store path/);
    execFileSync("mkfifo", [join(root, "nix/store", `${H1}-fifo`)]);
    await expect(tarBytes([`/nix/store/${H1}-fifo`], root)).rejects.toThrow(/unsupported file type/);
    await expect(tarBytes([`/nix/store/${H2}-missing`], root)).rejects.toThrow(/ENOENT/);
  });

  it("archives an empty set as the store directories only", async () => {
    const root = tempRoot();
    const bytes = await tarBytes([], root);
    expect(bytes.length).toBe(512 * 2 + 1024);
    const list = execFileSync("tar", ["-tf", writeTar(bytes)]).toString();
    expect(list).toBe("nix/\nnix/store/\n");
  });
});
