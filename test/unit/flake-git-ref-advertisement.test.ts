import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  decodePktLines,
  encodePktLine,
  GitProtocolError,
  GitServerMessageError,
  parseRefAdvertisement,
  PktLineDecoder,
  RefAdvertisementParser,
  type AdvertisementEvent,
  type PktLine,
} from "../../src/flake/git-ref-advertisement.ts";

const enc = new TextEncoder();
const bytes = (s: string) => enc.encode(s);
const text = (p: PktLine) => (p.type === "data" ? new TextDecoder().decode(p.payload) : p.type);

const A = "b5affce53d3fb0c72c3fdda9ecbbed06888b990b";
const B = "1111111111111111111111111111111111111111";
const C = "2222222222222222222222222222222222222222";
const D = "3333333333333333333333333333333333333333";
const ZERO = "0".repeat(40);
const CAPS =
  "multi_ack thin-pack side-band side-band-64k ofs-delta shallow no-progress include-tag symref=HEAD:refs/heads/main object-format=sha1 agent=git/2.39.5";

/** A pkt-line stream from strings ("" is a flush). */
function stream(...lines: string[]): Uint8Array {
  const parts = lines.map((l) => (l === "" ? bytes("0000") : encodePktLine(l)));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const SERVICE = "# service=git-upload-pack\n";

/** What `git upload-pack --http-backend-info-refs` plus http-backend's header send for a small repo. */
const typicalV0 = stream(
  SERVICE,
  "",
  `${A} HEAD\0${CAPS}\n`,
  `${A} refs/heads/main\n`,
  `${B} refs/heads/dev\n`,
  `${C} refs/tags/v1\n`,
  `${D} refs/tags/v2\n`,
  `${A} refs/tags/v2^{}\n`,
  "",
);

describe("pkt-line decoding", () => {
  const valid: [string, string, string[]][] = [
    ["flush", "0000", ["flush"]],
    ["delim and response-end (v2)", "00010002", ["delim", "response-end"]],
    ["data with newline", "0006a\n", ["a\n"]],
    ["empty data packet", "0004", [""]],
    ["upper-case hex length", "000Ahello\n", ["hello\n"]],
    ["several packets", "0009hello0000000aworld!", ["hello", "flush", "world!"]],
    ["empty input", "", []],
  ];
  it.each(valid)("%s", (_name, input, expected) => {
    expect(decodePktLines(bytes(input)).map(text)).toEqual(expected);
  });

  const malformed: [string, string, RegExp][] = [
    ["non-hex length", "zzzzabc", /invalid pkt-line length "zzzz"/],
    ["length with a space", "00 5a", /invalid pkt-line length/],
    ["length 0003", "0003", /invalid pkt-line length 0003/],
    ["length above the maximum", "fff1" + "x".repeat(10), /exceeds the maximum of 65520/],
    ["truncated packet", "0009ab", /ended inside a pkt-line \(6 bytes/],
    ["truncated length", "00", /ended inside a pkt-line \(2 bytes/],
    ["binary garbage", "\x00\x01\x02\x03", /invalid pkt-line length "\\\\x00/],
  ];
  it.each(malformed)("rejects %s", (_name, input, message) => {
    expect(() => decodePktLines(bytes(input))).toThrow(GitProtocolError);
    expect(() => decodePktLines(bytes(input))).toThrow(message);
  });

  it("reports the byte offset of a bad length", () => {
    try {
      decodePktLines(bytes("0009hello0000xyz!"));
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(GitProtocolError);
      expect((e as GitProtocolError).offset).toBe(13);
    }
  });

  it("the largest packet is accepted", () => {
    const payload = "y".repeat(65516);
    const [p] = decodePktLines(bytes("fff0" + payload));
    expect(p?.type === "data" && p.payload.length).toBe(65516);
  });

  it("decodes the same packets however the stream is split (property)", () => {
    const packet = fc.oneof(fc.constant<string | null>(null), fc.string({ maxLength: 40 }));
    fc.assert(
      fc.property(fc.array(packet, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 10 }), (packets, cuts) => {
        const wire = stream(...packets.map((p) => (p === null ? "" : "d" + p)));
        const whole = decodePktLines(wire).map(text);
        const points = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
        const decoder = new PktLineDecoder();
        const pieces: string[] = [];
        let last = 0;
        for (const p of [...points, wire.length]) {
          pieces.push(...decoder.push(wire.subarray(last, p)).map(text));
          last = p;
        }
        decoder.end();
        expect(pieces).toEqual(whole);
        expect(whole).toEqual(packets.map((p) => (p === null ? "flush" : "d" + p)));
      }),
    );
  });

  it("encodePktLine rejects oversized payloads", () => {
    expect(() => encodePktLine("x".repeat(65517))).toThrow(RangeError);
  });
});

describe("smart ref advertisement (v0/v1)", () => {
  it("parses a typical advertisement: HEAD symref, branches, annotated tag", () => {
    const adv = parseRefAdvertisement(typicalV0, "smart");
    expect(adv.symrefs.get("HEAD")).toBe("refs/heads/main");
    expect(adv.capabilities).toContain("side-band-64k");
    expect(adv.refs).toEqual([
      { name: "HEAD", oid: A },
      { name: "refs/heads/main", oid: A },
      { name: "refs/heads/dev", oid: B },
      { name: "refs/tags/v1", oid: C },
      { name: "refs/tags/v2", oid: D, peeled: A },
    ]);
  });

  it("emits events in stream order and stops at the final flush", () => {
    const parser = new RefAdvertisementParser("smart");
    const tail = bytes("trailing bytes are ignored");
    const wire = new Uint8Array([...typicalV0, ...tail]);
    const events: AdvertisementEvent[] = parser.push(wire);
    expect(events.map((e) => e.type)).toEqual(["capabilities", "ref", "ref", "ref", "ref", "ref", "peeled", "end"]);
    expect(parser.done).toBe(true);
    expect(parser.end()).toEqual([]);
  });

  const table: [string, Uint8Array, { refs: [string, string, string?][]; head?: string }][] = [
    [
      "protocol v1 (version line)",
      stream(SERVICE, "", "version 1\n", `${A} HEAD\0symref=HEAD:refs/heads/trunk\n`, `${A} refs/heads/trunk\n`, ""),
      {
        refs: [
          ["HEAD", A],
          ["refs/heads/trunk", A],
        ],
        head: "refs/heads/trunk",
      },
    ],
    ["empty repository (capabilities^{})", stream(SERVICE, "", `${ZERO} capabilities^{}\0${CAPS}\n`, ""), { refs: [], head: "refs/heads/main" }],
    ["empty repository (flush only)", stream(SERVICE, "", ""), { refs: [] }],
    ["no service header", stream(`${A} refs/heads/main\0agent=x\n`, ""), { refs: [["refs/heads/main", A]] }],
    ["lines between service line and flush are skipped", stream(SERVICE, "some extra header\n", "", `${A} HEAD\0\n`, ""), { refs: [["HEAD", A]] }],
    [
      "no trailing newlines",
      stream(SERVICE, "", `${A} HEAD\0symref=HEAD:refs/heads/main`, `${B} refs/heads/main`, ""),
      {
        refs: [
          ["HEAD", A],
          ["refs/heads/main", B],
        ],
        head: "refs/heads/main",
      },
    ],
    ["shallow lines are ignored", stream(SERVICE, "", `${A} HEAD\0\n`, `shallow ${B}\n`, ""), { refs: [["HEAD", A]] }],
    [
      "detached HEAD (no symref)",
      stream(SERVICE, "", `${A} HEAD\0multi_ack\n`, `${B} refs/heads/main\n`, ""),
      {
        refs: [
          ["HEAD", A],
          ["refs/heads/main", B],
        ],
      },
    ],
    [
      "SHA-256 object ids",
      stream(SERVICE, "", `${"a".repeat(64)} refs/heads/main\0object-format=sha256\n`, ""),
      { refs: [["refs/heads/main", "a".repeat(64)]] },
    ],
    ["empty capability list", stream(SERVICE, "", `${A} refs/heads/x\0\n`, ""), { refs: [["refs/heads/x", A]] }],
  ];
  it.each(table)("%s", (_name, wire, expected) => {
    const adv = parseRefAdvertisement(wire, "smart");
    expect(adv.refs.map((r) => (r.peeled ? [r.name, r.oid, r.peeled] : [r.name, r.oid]))).toEqual(expected.refs);
    expect(adv.symrefs.get("HEAD")).toBe(expected.head);
  });

  const malformed: [string, Uint8Array, RegExp][] = [
    ["empty body", new Uint8Array(0), /response is empty/],
    ["starts with a flush", stream(""), /starts with a flush packet/],
    ["another service", stream("# service=git-receive-pack\n", ""), /service 'git-receive-pack'/],
    ["protocol v2 answer", stream("version 2\n", "ls-refs\n", ""), /protocol v2, which was not requested/],
    ["protocol v2 after service header", stream(SERVICE, "", "version 2\n", ""), /protocol v2/],
    ["first ref without capabilities", stream(SERVICE, "", `${A} HEAD\n`, ""), /first ref line has no capabilities/],
    ["short object id", stream(SERVICE, "", `abc HEAD\0\n`, ""), /expected an object id/],
    ["upper-case object id", stream(SERVICE, "", `${A.toUpperCase()} HEAD\0\n`, ""), /expected an object id/],
    ["missing ref name", stream(SERVICE, "", `${A}\0\n`, ""), /expected an object id|expected "<object id> <ref name>"/],
    ["ref name with a space", stream(SERVICE, "", `${A} HEAD\0\n`, `${B} refs/heads/a b\n`, ""), /expected "<object id> <ref name>"/],
    ["NUL in a later line", stream(SERVICE, "", `${A} HEAD\0\n`, `${B} refs/heads/x\0caps\n`, ""), /unexpected NUL/],
    ["peeled line without its ref", stream(SERVICE, "", `${A} HEAD\0\n`, `${B} refs/tags/v1^{}\n`, ""), /does not follow its ref/],
    ["truncated (no final flush)", stream(SERVICE, "", `${A} HEAD\0\n`, `${B} refs/heads/main\n`), /ended without its final flush packet/],
    ["truncated inside a packet", typicalV0.subarray(0, 100), /ended inside a pkt-line/],
    ["delimiter packet", new Uint8Array([...stream(SERVICE, "", `${A} HEAD\0\n`), ...bytes("0001")]), /unexpected delim packet/],
    ["HTML instead of pkt-lines", bytes("<!DOCTYPE html><html>"), /invalid pkt-line length/],
  ];
  it.each(malformed)("rejects %s", (_name, wire, message) => {
    expect(() => parseRefAdvertisement(wire, "smart")).toThrow(GitProtocolError);
    expect(() => parseRefAdvertisement(wire, "smart")).toThrow(message);
  });

  it("reports ERR packets as the server's message", () => {
    const wire = stream(SERVICE, "", "ERR access denied or repository not exported: /x.git\n");
    expect(() => parseRefAdvertisement(wire, "smart")).toThrow(GitServerMessageError);
    expect(() => parseRefAdvertisement(wire, "smart")).toThrow("the git server reported an error: access denied or repository not exported: /x.git");
  });

  it("gives the same events whatever the chunking (byte by byte)", () => {
    const parser = new RefAdvertisementParser("smart");
    const events: AdvertisementEvent[] = [];
    for (let i = 0; i < typicalV0.length; i++) events.push(...parser.push(typicalV0.subarray(i, i + 1)));
    events.push(...parser.end());
    const whole = new RefAdvertisementParser("smart").push(typicalV0);
    expect(events).toEqual(whole);
  });
});

describe("dumb info/refs", () => {
  it("parses tab-separated lines, peeled tags, CRLF and a missing final newline", () => {
    const body = bytes(`${A}\trefs/heads/main\n${B}\trefs/heads/dev\r\n${D}\trefs/tags/v2\n${A}\trefs/tags/v2^{}\n${C}\trefs/tags/v1`);
    expect(parseRefAdvertisement(body, "dumb")).toEqual({
      capabilities: [],
      symrefs: new Map(),
      refs: [
        { name: "refs/heads/main", oid: A },
        { name: "refs/heads/dev", oid: B },
        { name: "refs/tags/v2", oid: D, peeled: A },
        { name: "refs/tags/v1", oid: C },
      ],
    });
  });

  it("an empty file is an empty repository", () => {
    expect(parseRefAdvertisement(new Uint8Array(0), "dumb").refs).toEqual([]);
  });

  it.each([
    ["space instead of tab", `${A} refs/heads/main\n`],
    ["short id", `abc\trefs/heads/main\n`],
    ["pkt-line body", "003fsomething"],
  ])("rejects %s", (_name, body) => {
    expect(() => parseRefAdvertisement(bytes(body), "dumb")).toThrow(GitProtocolError);
  });
});
