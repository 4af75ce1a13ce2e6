import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  FlakeRefError,
  KNOWN_SCHEMES,
  cloneUrlOf,
  decodeQuery,
  formatFlakeRef,
  parseFlakeRef,
  percentDecode,
  redactCredentials,
  withRevision,
  type FlakeRef,
} from "../../src/flake/flake-ref.ts";

const REV = "0123456789abcdef0123456789abcdef01234567";
const REV_UPPER = REV.toUpperCase();
const NAR = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

// What each form parses to. Expected values are written out in full so that a change in any
// field shows up here.
const accepted: [string, FlakeRef][] = [
  // github / gitlab / sourcehut
  ["github:acme/shop", { type: "github", scheme: "github", owner: "acme", repo: "shop", params: {} }],
  ["github:acme/shop/main", { type: "github", scheme: "github", owner: "acme", repo: "shop", ref: "main", params: {} }],
  ["github:acme/shop/feature/x", { type: "github", scheme: "github", owner: "acme", repo: "shop", ref: "feature/x", params: {} }],
  [`github:acme/shop/${REV_UPPER}`, { type: "github", scheme: "github", owner: "acme", repo: "shop", rev: REV, params: {} }],
  ["github:acme/shop?ref=v1.2&dir=nix/web", { type: "github", scheme: "github", owner: "acme", repo: "shop", ref: "v1.2", dir: "nix/web", params: {} }],
  [`github:acme/shop?rev=${REV}`, { type: "github", scheme: "github", owner: "acme", repo: "shop", rev: REV, params: {} }],
  ["github:acme/shop?host=ghe.example.com", { type: "github", scheme: "github", owner: "acme", repo: "shop", host: "ghe.example.com", params: {} }],
  ["github:acme/shop?narHash=x&lastModified=1", { type: "github", scheme: "github", owner: "acme", repo: "shop", params: { narHash: "x", lastModified: "1" } }],
  ["github:acme/shop?dir=", { type: "github", scheme: "github", owner: "acme", repo: "shop", params: {} }],
  ["github:acme/shop?ref=main&ref=dev", { type: "github", scheme: "github", owner: "acme", repo: "shop", ref: "main", params: {} }],
  ["github:acme/shop?ref&dir=a%20b", { type: "github", scheme: "github", owner: "acme", repo: "shop", dir: "a b", params: {} }],
  ["github:acme//shop/", { type: "github", scheme: "github", owner: "acme", repo: "shop", params: {} }],
  ["github:/acme/shop", { type: "github", scheme: "github", owner: "acme", repo: "shop", params: {} }],
  // base-32 and base-64 spellings of a commit, as Nix's hash parser accepts them
  [
    "github:o/r?rev=0123456789abcdfghijklmnpqrsvwxyz",
    { type: "github", scheme: "github", owner: "o", repo: "r", rev: "df77be75c6d7563a6584cf35b65442c714324400", params: {} },
  ],
  ["github:o/r?rev=qqqqqqqqqqqqqqqqqqqqqqqqqqo=", { type: "github", scheme: "github", owner: "o", repo: "r", rev: "a".repeat(40), params: {} }],
  [`github:o/r?rev=sha1:${REV}`, { type: "github", scheme: "github", owner: "o", repo: "r", rev: REV, params: {} }],
  ["gitlab:acme/shop/main", { type: "gitlab", scheme: "gitlab", owner: "acme", repo: "shop", ref: "main", params: {} }],
  ["gitlab:group%2Fsub/shop", { type: "gitlab", scheme: "gitlab", owner: "group%2Fsub", repo: "shop", params: {} }],
  ["sourcehut:~user/repo", { type: "sourcehut", scheme: "sourcehut", owner: "~user", repo: "repo", params: {} }],
  [
    "sourcehut:~user/repo/main?host=git.example.org",
    { type: "sourcehut", scheme: "sourcehut", owner: "~user", repo: "repo", ref: "main", host: "git.example.org", params: {} },
  ],
  // git
  ["git+https://example.com/acme/shop.git", { type: "git", scheme: "git+https", url: "https://example.com/acme/shop.git", params: {} }],
  [
    `git+https://example.com/shop?ref=main&rev=${REV}&dir=web&shallow=1&submodules=true&allRefs=1`,
    {
      type: "git",
      scheme: "git+https",
      url: "https://example.com/shop",
      ref: "main",
      rev: REV,
      dir: "web",
      shallow: true,
      submodules: false,
      params: { allRefs: "1" },
    },
  ],
  [
    "git+https://example.com/shop?ref=refs/heads/main",
    { type: "git", scheme: "git+https", url: "https://example.com/shop", ref: "refs/heads/main", params: {} },
  ],
  ["git+ssh://git@github.com/acme/shop", { type: "git", scheme: "git+ssh", url: "ssh://git@github.com/acme/shop", params: {} }],
  ["git+ssh://git@github.com:22/acme/shop", { type: "git", scheme: "git+ssh", url: "ssh://git@github.com:22/acme/shop", params: {} }],
  ["git+http://127.0.0.1:8080/shop.git", { type: "git", scheme: "git+http", url: "http://127.0.0.1:8080/shop.git", params: {} }],
  ["git+file:///src/shop", { type: "git", scheme: "git+file", url: "file:///src/shop", params: {} }],
  ["git+file:/src/shop", { type: "git", scheme: "git+file", url: "file:/src/shop", params: {} }],
  ["git+file:", { type: "git", scheme: "git+file", url: "file:/", params: {} }],
  ["git://example.com/shop", { type: "git", scheme: "git", url: "git://example.com/shop", params: {} }],
  ["git+https://[::1]:8443/shop", { type: "git", scheme: "git+https", url: "https://[::1]:8443/shop", params: {} }],
  // mercurial
  ["hg+https://example.com/shop?ref=default", { type: "mercurial", scheme: "hg+https", url: "https://example.com/shop", ref: "default", params: {} }],
  [`hg+ssh://example.com/shop?rev=${REV}`, { type: "mercurial", scheme: "hg+ssh", url: "ssh://example.com/shop", rev: REV, params: {} }],
  ["hg+file:///src", { type: "mercurial", scheme: "hg+file", url: "file:///src", params: {} }],
  // archives and files
  ["https://example.com/shop.tar.gz", { type: "tarball", scheme: "https", url: "https://example.com/shop.tar.gz", params: {} }],
  ["http://example.com/shop.zip", { type: "tarball", scheme: "http", url: "http://example.com/shop.zip", params: {} }],
  ["file:///srv/shop.tar.zst", { type: "tarball", scheme: "file", url: "file:///srv/shop.tar.zst", params: {} }],
  [
    `https://example.com/shop.tgz?narHash=${NAR}&dir=web&token=x`,
    { type: "tarball", scheme: "https", url: "https://example.com/shop.tgz", narHash: NAR, dir: "web", params: { token: "x" } },
  ],
  ["https://example.com/shop.TAR.GZ", { type: "file", scheme: "https", url: "https://example.com/shop.TAR.GZ", params: {} }],
  ["https://example.com/shop", { type: "file", scheme: "https", url: "https://example.com/shop", params: {} }],
  ["tarball+https://example.com/archive/main", { type: "tarball", scheme: "tarball+https", url: "https://example.com/archive/main", params: {} }],
  ["tarball+http://example.com/a", { type: "tarball", scheme: "tarball+http", url: "http://example.com/a", params: {} }],
  ["tarball+file:///srv/a", { type: "tarball", scheme: "tarball+file", url: "file:///srv/a", params: {} }],
  ["file+https://example.com/a.tar.gz", { type: "file", scheme: "file+https", url: "https://example.com/a.tar.gz", params: {} }],
  ["file+file:///srv/flake.nix", { type: "file", scheme: "file+file", url: "file:///srv/flake.nix", params: {} }],
  // path: URLs
  ["path:/src/shop", { type: "path", scheme: "path", form: "url", path: "/src/shop", params: {} }],
  ["path:///src/shop", { type: "path", scheme: "path", form: "url", path: "/src/shop", params: {} }],
  ["path:shop", { type: "path", scheme: "path", form: "url", path: "shop", params: {} }],
  ["path:./shop", { type: "path", scheme: "path", form: "url", path: "./shop", params: {} }],
  [
    `path:/src?rev=${REV}&narHash=${NAR.replace(/\//g, "%2f")}&revCount=%2B5&lastModified=07`,
    { type: "path", scheme: "path", form: "url", path: "/src", rev: REV, narHash: NAR, revCount: 5, lastModified: 7, params: {} },
  ],
  // bare paths
  [".", { type: "path", scheme: "path", form: "bare", path: ".", params: {} }],
  ["./shop", { type: "path", scheme: "path", form: "bare", path: "./shop", params: {} }],
  ["../shop/", { type: "path", scheme: "path", form: "bare", path: "../shop/", params: {} }],
  ["/src/shop?dir=web&ref=main", { type: "path", scheme: "path", form: "bare", path: "/src/shop", dir: "web", params: { ref: "main" } }],
  ["nixpkgs/-x", { type: "path", scheme: "path", form: "bare", path: "nixpkgs/-x", params: {} }],
  ["1nixpkgs", { type: "path", scheme: "path", form: "bare", path: "1nixpkgs", params: {} }],
  ["nixpkgs?dir=x", { type: "path", scheme: "path", form: "bare", path: "nixpkgs", dir: "x", params: {} }],
  // indirect (registry) refs
  ["nixpkgs", { type: "indirect", scheme: "flake", form: "bare", id: "nixpkgs", params: {} }],
  ["nixpkgs/nixos-24.05", { type: "indirect", scheme: "flake", form: "bare", id: "nixpkgs", ref: "nixos-24.05", params: {} }],
  [`nixpkgs/${REV}`, { type: "indirect", scheme: "flake", form: "bare", id: "nixpkgs", rev: REV, params: {} }],
  [`nixpkgs/main/${REV_UPPER}`, { type: "indirect", scheme: "flake", form: "bare", id: "nixpkgs", ref: "main", rev: REV, params: {} }],
  ["nixpkgs/main/", { type: "indirect", scheme: "flake", form: "bare", id: "nixpkgs", ref: "main", params: {} }],
  ["nixpkgs#", { type: "indirect", scheme: "flake", form: "bare", id: "nixpkgs", params: {} }],
  ["flake:nixpkgs", { type: "indirect", scheme: "flake", form: "url", id: "nixpkgs", params: {} }],
  [
    "flake:nixpkgs/main?dir=lib&ref=ignored",
    { type: "indirect", scheme: "flake", form: "url", id: "nixpkgs", ref: "main", dir: "lib", params: { ref: "ignored" } },
  ],
];

// Inputs Nix 2.8 refuses before fetching anything, and the part of our message that says why.
const rejected: [string, RegExp][] = [
  ["", /empty/],
  ["github:acme/shop#web", /fragment '#web'.*attribute/],
  ["nixpkgs#hello", /fragment '#hello'/],
  ["./x#a", /fragment/],
  ["github:acme", /owner and a repository/],
  ["github://acme/shop", /owner and a repository/],
  ["github:acme/shop/x@y", /neither a commit hash .* nor a branch/],
  ["github:acme/shop/-x", /neither a commit hash/],
  ["github:acme/shop?ref=-x", /not a valid branch\/tag name/],
  ["github:acme/shop/main?ref=dev", /branch\/tag twice/],
  [`github:acme/shop/${REV}?rev=${REV}`, /commit twice/],
  [`github:acme/shop?rev=${REV}&ref=main`, /both a branch\/tag and a commit/],
  ["github:acme/shop?rev=abc", /wrong length/],
  [`github:acme/shop?rev=${"g".repeat(40)}`, /not a hexadecimal/],
  ["github:acme/shop?rev=sha256:" + "a".repeat(64), /sha256 hash, not a git commit/],
  ["github:acme/shop?host=ghe.example.com:8080", /not a valid host/],
  ["github:acme/shop?host=my-ghe.example.com", /not a valid host/],
  ["GITHUB:acme/shop", /scheme must be lower case/],
  ["bitbucket:acme/shop", /unsupported scheme 'bitbucket:'/],
  ["hg://example.com/x", /unsupported scheme/],
  ["ftp://example.com/a.tar.gz", /unsupported scheme/],
  ["github:acme/shop|x", /character '\|'/],
  ["github:acme/shop`x", /character '`'/],
  ["github:acme shop", /a space/],
  ["github:acme/shop?dir=%zz", /%XX escape/],
  ["git+https://example.com/x?ref=a..b", /not a valid git branch/],
  ["git+https://example.com/x?ref=", /not a valid git branch/],
  ["git+https://example.com/x?ref=x.lock", /not a valid git branch/],
  ["git+https://example.com/x?ref=a%20b", /not a valid git branch/],
  ["git+https://example.com/x?rev=bad", /wrong length/],
  ["git+file://host/src", /names host 'host' in a file URL/],
  ["file://host/a.tar.gz", /names host/],
  ["hg+https://example.com/x?ref=", /Mercurial/],
  ["https://example.com/a.tar.gz?narHash=sha256-short", /not an SRI SHA-256/],
  ["https://example.com/a.tar.gz?narHash=sha512-AAAA", /not an SRI SHA-256/],
  ["path://host/src", /names host 'host'/],
  ["path:/src?dir=web", /path: refs do not take/],
  ["path:/src?ref=main", /parameter 'ref'/],
  ["path:/src?revCount=-1", /not a non-negative integer/],
  ["path:/src?lastModified=", /not a non-negative integer/],
  ["path:/src?narHash=bad", /not an SRI/],
  ["/", /not a valid flake ref/],
  ["//src", /not a valid flake ref/],
  ["/a//b", /not a valid flake ref/],
  ["nixpkgs/a@b", /not a valid flake ref/],
  ["nixpkgs/a/b", /'b' is not a commit hash/],
  ["nixpkgs/a/b/c", /not a valid registry ref/],
  ["flake:1x", /not a valid flake id/],
  ["flake://nixpkgs", /not a valid registry ref/],
  ["flake:nixpkgs/a@b", /neither a commit hash/],
];

describe("parseFlakeRef", () => {
  it.each(accepted)("parses %s", (input, expected) => {
    expect(parseFlakeRef(input)).toStrictEqual(expected);
  });

  it.each(rejected)("rejects %s", (input, message) => {
    let error: unknown;
    try {
      parseFlakeRef(input);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(FlakeRefError);
    expect((error as Error).message).toMatch(message);
  });

  it("never puts a URL password into an error", () => {
    try {
      parseFlakeRef("git+https://user:hunter2@example.com/x?ref=a..b");
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(FlakeRefError);
      expect((e as FlakeRefError).message).not.toContain("hunter2");
      expect((e as FlakeRefError).input).not.toContain("hunter2");
      expect((e as FlakeRefError).message).toContain("user:***@");
    }
  });

  it("treats a query parameter key as raw text and its value as percent-encoded", () => {
    expect(decodeQuery("%72ef=ma%69n&a=1=2&b&=x&a=3")).toEqual(
      new Map([
        ["%72ef", "main"],
        ["a", "1=2"],
        ["", "x"],
      ]),
    );
    expect(percentDecode("a%2Fb+c%e2%82%ac%FF")).toBe("a/b+c€\uFFFD");
  });

  it("redacts only the password of a URL", () => {
    expect(redactCredentials("git+https://me:secret@h/x and ssh://git@h/y")).toBe("git+https://me:***@h/x and ssh://git@h/y");
  });
});

describe("formatFlakeRef", () => {
  const canonical: [string, string][] = [
    ["github:acme/shop?ref=main", "github:acme/shop/main"],
    ["github:acme//shop/?ref=feature/x", "github:acme/shop/feature/x"],
    ["github:acme/shop?ref=a//b", "github:acme/shop?ref=a//b"],
    [`github:acme/shop?ref=${"a".repeat(40)}`, `github:acme/shop?ref=${"a".repeat(40)}`],
    [`github:acme/shop?rev=${REV_UPPER}&dir=web`, `github:acme/shop/${REV}?dir=web`],
    ["git+https://h/x?submodules=1&ref=main&foo=a%26b", "git+https://h/x?ref=main&submodules=1&foo=a%26b"],
    ["git+https://h/x?shallow=yes", "git+https://h/x?shallow=0"],
    ["https://h/a.tar.gz?narHash=" + NAR.replace(/\//g, "%2F"), "https://h/a.tar.gz?narHash=" + NAR],
    ["path:///src", "path:/src"],
    ["path:////src", "path:////src"],
    ["nixpkgs?", "nixpkgs?"],
    ["./x?dir=", "./x"],
    ["nixpkgs/main/", "nixpkgs/main"],
    ["flake:nixpkgs/main?dir=a%20b", "flake:nixpkgs/main?dir=a%20b"],
    ["git+file:", "git+file:/"],
  ];
  it.each(canonical)("writes %s as %s", (input, expected) => {
    expect(formatFlakeRef(parseFlakeRef(input))).toBe(expected);
  });

  it.each(accepted)("round-trips %s", (input) => {
    const ref = parseFlakeRef(input);
    expect(parseFlakeRef(formatFlakeRef(ref))).toStrictEqual(ref);
  });
});

describe("withRevision", () => {
  it("pins forge refs to the commit and drops the branch", () => {
    const r = withRevision(parseFlakeRef("github:acme/shop/main?dir=web"), REV_UPPER);
    expect(r).toStrictEqual({ type: "github", scheme: "github", owner: "acme", repo: "shop", rev: REV, dir: "web", params: {} });
    expect(formatFlakeRef(r)).toBe(`github:acme/shop/${REV}?dir=web`);
  });

  it("keeps the branch of git, Mercurial and registry refs", () => {
    expect(formatFlakeRef(withRevision(parseFlakeRef("git+https://h/x?ref=main&dir=d"), REV))).toBe(`git+https://h/x?ref=main&rev=${REV}&dir=d`);
    expect(formatFlakeRef(withRevision(parseFlakeRef("hg+https://h/x"), REV))).toBe(`hg+https://h/x?rev=${REV}`);
    expect(formatFlakeRef(withRevision(parseFlakeRef("nixpkgs/main"), REV))).toBe(`nixpkgs/main/${REV}`);
  });

  it("replaces an earlier pin", () => {
    const other = "f".repeat(40);
    expect(formatFlakeRef(withRevision(parseFlakeRef(`github:a/b/${REV}`), other))).toBe(`github:a/b/${other}`);
  });

  it("refuses what cannot be pinned and what is not a commit", () => {
    expect(() => withRevision(parseFlakeRef("https://h/a.tar.gz"), REV)).toThrow(FlakeRefError);
    expect(() => withRevision(parseFlakeRef("path:/x"), REV)).toThrow(/no commits to pin/);
    expect(() => withRevision(parseFlakeRef("github:a/b"), "main")).toThrow(/not a commit hash/);
  });
});

describe("cloneUrlOf", () => {
  const cases: [string, ReturnType<typeof cloneUrlOf>][] = [
    ["github:acme/shop", { url: "https://github.com/acme/shop.git", ref: "HEAD" }],
    ["github:acme/shop/release/1.x", { url: "https://github.com/acme/shop.git", ref: "release/1.x" }],
    ["github:acme/shop?host=ghe.example.com&ref=main", { url: "https://ghe.example.com/acme/shop.git", ref: "main" }],
    [`github:acme/shop/${REV}`, { url: "https://github.com/acme/shop.git", ref: "HEAD", rev: REV }],
    ["gitlab:group%2Fsub/shop/main", { url: "https://gitlab.com/group/sub/shop.git", ref: "main" }],
    ["sourcehut:~me/shop", { url: "https://git.sr.ht/~me/shop", ref: "HEAD" }],
    ["git+https://git.example.com/shop.git?ref=main&dir=web", { url: "https://git.example.com/shop.git", ref: "main" }],
    ["git+http://127.0.0.1:8080/shop.git", { url: "http://127.0.0.1:8080/shop.git", ref: "HEAD" }],
    ["git+ssh://git@example.com/shop", undefined],
    ["git+file:///src", undefined],
    ["git://example.com/shop", undefined],
    ["https://h/a.tar.gz", undefined],
    ["nixpkgs", undefined],
  ];
  it.each(cases)("%s", (input, expected) => {
    expect(cloneUrlOf(parseFlakeRef(input))).toStrictEqual(expected);
  });
});

// ---------------------------------------------------------------------------------------------
// Properties over generated inputs that look like flake refs (and some that do not).

const hex40 = fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF"), minLength: 40, maxLength: 40 });
const oddChar = fc.constantFrom(..."-._~!$&'\"()*+,;=:@/?#% `|<>\\^{}[]\n\t\u0000\u00e9\u{1F600}");
const word = fc.oneof(
  fc.constantFrom("acme", "shop", "main", "v1.2", "x86_64", "~me", "a", "B", "0", "nixpkgs", "feature/x", "a..b", "x.lock", "-x", "tar.gz"),
  fc.string({ unit: fc.constantFrom(..."abcXYZ019-._~"), maxLength: 5 }),
  fc.string({ unit: oddChar, maxLength: 2 }),
);
const key = fc.constantFrom("ref", "rev", "dir", "host", "narHash", "shallow", "submodules", "allRefs", "lastModified", "revCount", "foo", "%72ef", "");
const value = fc.oneof(word, hex40, fc.constantFrom(NAR, "1", "0", "+5", "%2F", "%zz", "%41", "a%20b", "qqqqqqqqqqqqqqqqqqqqqqqqqqo="));
const query = fc
  .array(
    fc.oneof(
      fc.tuple(key, value).map(([k, v]) => `${k}=${v}`),
      key,
    ),
    { maxLength: 4 },
  )
  .map((kvs) => kvs.join("&"));
const scheme = fc.constantFrom(...KNOWN_SCHEMES, "GitHub", "hg", "ftp", "git+git", "tarball", "x");
const authority = fc.constantFrom("", "example.com", "git@example.com", "u:p@h", "127.0.0.1:8080", "[::1]", "h:x");
const pathPart = fc.array(fc.oneof(word, hex40), { maxLength: 4 }).map((ws) => ws.join("/"));
const ext = fc.constantFrom("", "", ".tar.gz", ".zip", ".tar");

const flakeRefLike: fc.Arbitrary<string> = fc.oneof(
  // scheme:path?query#fragment
  fc
    .tuple(scheme, fc.constantFrom(":", "://", ":/", ":///"), authority, pathPart, ext, fc.option(query), fc.option(word))
    .map(([s, sep, a, p, e, q, f]) => `${s}${sep}${sep === "://" ? a + "/" : ""}${p}${e}${q === null ? "" : "?" + q}${f === null ? "" : "#" + f}`),
  // bare paths and registry names
  fc
    .tuple(fc.constantFrom("", ".", "./", "../", "/", "//"), pathPart, fc.option(query), fc.option(word))
    .map(([pre, p, q, f]) => `${pre}${p}${q === null ? "" : "?" + q}${f === null ? "" : "#" + f}`),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 20 }),
);

describe("parseFlakeRef properties", () => {
  it("throws nothing but FlakeRefError", () => {
    fc.assert(
      fc.property(flakeRefLike, (input) => {
        try {
          parseFlakeRef(input);
        } catch (e) {
          if (!(e instanceof FlakeRefError)) throw e;
        }
      }),
      { numRuns: 20_000 },
    );
  });

  it("round-trips: parse(format(parse(x))) deep-equals parse(x), and format is a fixed point", () => {
    let parsed = 0;
    fc.assert(
      fc.property(flakeRefLike, (input) => {
        let ref: FlakeRef;
        try {
          ref = parseFlakeRef(input);
        } catch {
          return;
        }
        parsed++;
        const text = formatFlakeRef(ref);
        const again = parseFlakeRef(text);
        expect(again).toStrictEqual(ref);
        expect(formatFlakeRef(again)).toBe(text);
      }),
      { numRuns: 20_000 },
    );
    // The generator must reach the parser's accepting paths often enough to mean something.
    expect(parsed).toBeGreaterThan(3000);
  });

  it("round-trips pinned refs", () => {
    fc.assert(
      fc.property(flakeRefLike, hex40, (input, rev) => {
        let ref: FlakeRef;
        try {
          ref = withRevision(parseFlakeRef(input), rev);
        } catch {
          return;
        }
        expect(ref.type === "path" || ref.type === "tarball" || ref.type === "file").toBe(false);
        expect(parseFlakeRef(formatFlakeRef(ref))).toStrictEqual(ref);
      }),
      { numRuns: 5_000 },
    );
  });

  // A regex with catastrophic backtracking would hang here (no timing assertion: see design.md §9).
  it("finishes on long hostile inputs", () => {
    const hostile = [
      "git+https://" + "a:".repeat(3000) + "!",
      "github:" + "/".repeat(5000) + "|",
      "x:" + "%41".repeat(2000) + "%",
      "a" + "/a".repeat(3000) + "/@",
      "git+https://" + "[".repeat(3000),
    ];
    for (const input of hostile) {
      try {
        parseFlakeRef(input);
      } catch (e) {
        expect(e).toBeInstanceOf(FlakeRefError);
      }
    }
  });
});
