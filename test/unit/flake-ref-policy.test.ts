import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { KNOWN_SCHEMES } from "../../src/flake/flake-ref.ts";
import {
  ATTRIBUTE_MAX_LENGTH,
  ATTRIBUTE_REGEX_SOURCE,
  DEFAULT_ALLOWED_SCHEMES,
  FlakeRefPolicySchema,
  attributePattern,
  checkAttribute,
  checkFlakeRef,
  defaultFlakeRefPolicy,
  flakeRefAddressCelRegexes,
  flakeRefCelRegex,
  type FlakeRefDenyCode,
  type FlakeRefPolicy,
} from "../../src/flake/flake-ref-policy.ts";

const REV = "0123456789abcdef0123456789abcdef01234567";
const NAR = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

const policy = (input: Partial<FlakeRefPolicy>): FlakeRefPolicy => FlakeRefPolicySchema.parse(input);
const widest = policy({ allowedSchemes: [...KNOWN_SCHEMES], allowHostOverride: true, maxLength: 4096 });

describe("FlakeRefPolicy schema", () => {
  it("defaults to design.md §6", () => {
    expect(defaultFlakeRefPolicy).toEqual({
      allowedSchemes: ["github", "gitlab", "sourcehut", "git+https", "git+ssh", "tarball+https", "https"],
      allowHostOverride: false,
      maxLength: 1024,
      allowedAddressRanges: [],
    });
    expect(DEFAULT_ALLOWED_SCHEMES).toEqual(defaultFlakeRefPolicy.allowedSchemes);
  });

  it("does not share the default list between parses", () => {
    const a = FlakeRefPolicySchema.parse({});
    a.allowedSchemes.push("path");
    expect(FlakeRefPolicySchema.parse({}).allowedSchemes).not.toContain("path");
  });

  it("rejects unknown schemes and unknown fields", () => {
    expect(FlakeRefPolicySchema.safeParse({ allowedSchemes: ["ftp"] }).success).toBe(false);
    expect(FlakeRefPolicySchema.safeParse({ allowedScheme: ["github"] }).success).toBe(false);
    expect(FlakeRefPolicySchema.safeParse({ maxLength: 1 }).success).toBe(false);
  });
});

describe("checkFlakeRef under the default policy", () => {
  const allowed: [string, boolean?][] = [
    ["github:acme/shop"],
    ["github:acme/shop/main"],
    ["github:acme/shop/release/1.x?dir=nix/web"],
    [`github:acme/shop/${REV}`],
    [`github:acme/shop?rev=${REV}&dir=web`],
    ["github:acme/shop?ref=main&dir=deploy/k8s.d"],
    ["gitlab:acme/shop"],
    ["gitlab:group%2Fsub/shop?ref=main"],
    ["sourcehut:~acme/shop/main"],
    ["git+https://git.example.com/acme/shop.git"],
    [`git+https://git.example.com:8443/shop?ref=main&rev=${REV}&dir=web&submodules=1&shallow=0`],
    ["git+ssh://git@github.com/acme/shop", true],
    ["git+ssh://github.com/acme/shop?ref=main", true],
    ["tarball+https://example.com/archive/main"],
    [`tarball+https://example.com/a?narHash=${NAR}`],
    ["https://example.com/shop-1.0.tar.gz"],
    ["https://example.com/shop.zip?dir=flake"],
    [`https://example.com/shop.tar.xz?narHash=${NAR.replace(/\//g, "%2f")}`],
  ];
  it.each(allowed)("allows %s", (input, hasSshKey) => {
    const verdict = checkFlakeRef(input, defaultFlakeRefPolicy, { hasSshKey: hasSshKey ?? false });
    expect(verdict).toMatchObject({ ok: true });
  });

  const denied: [string, FlakeRefDenyCode, RegExp][] = [
    // schemes denied by default
    [
      "path:/src/shop",
      "SchemeDenied",
      /'path:' flake refs are not allowed here \(allowed: github:, gitlab:, sourcehut:, git\+https:, git\+ssh:, tarball\+https:, https:\).*flakeRefPolicy\.allowedSchemes/,
    ],
    ["./shop", "SchemeDenied", /local paths are not allowed/],
    ["/src/shop", "SchemeDenied", /local paths are not allowed/],
    [".", "SchemeDenied", /local paths/],
    ["../shop", "SchemeDenied", /local paths/],
    ["file:///srv/shop.tar.gz", "SchemeDenied", /'file:' flake refs are not allowed/],
    ["git+file:///src/shop", "SchemeDenied", /'git\+file:'/],
    ["tarball+file:///srv/a.tar.gz", "SchemeDenied", /'tarball\+file:'/],
    ["file+https://example.com/a", "SchemeDenied", /'file\+https:'/],
    ["nixpkgs", "SchemeDenied", /registry names \('nixpkgs'\) are not allowed.*github:NixOS\/nixpkgs/],
    ["nixpkgs/nixos-24.05", "SchemeDenied", /registry names/],
    ["flake:nixpkgs", "SchemeDenied", /registry refs \('flake:'\)/],
    ["http://example.com/a.tar.gz", "SchemeDenied", /'http:'.*https form/],
    ["git+http://example.com/shop", "SchemeDenied", /'git\+http:'.*https form/],
    ["tarball+http://example.com/a", "SchemeDenied", /'tarball\+http:'/],
    ["git://example.com/shop", "SchemeDenied", /'git:'/],
    ["hg+https://example.com/shop", "SchemeDenied", /'hg\+https:'/],
    ["https://example.com/shop", "SchemeDenied", /does not name an archive.*tarball\+https/],
    ["path:/src?dir=x", "SchemeDenied", /'path:'/], // a parse error, but the scheme is the more useful answer
    // parameters
    ["github:acme/shop?host=ghe.example.com", "ParameterDenied", /'\?host=' .*flakeRefPolicy\.allowHostOverride/],
    ["github:acme/shop?narHash=" + NAR, "ParameterDenied", /'narHash' is not allowed in github: .*allowed: ref, rev, dir/],
    ["github:acme/shop?foo=1", "ParameterDenied", /'foo'/],
    ["github:acme/shop?%72ef=main", "ParameterDenied", /'%72ef'/],
    ["git+https://h/shop?allRefs=1", "ParameterDenied", /'allRefs'.*allowed: ref, rev, dir, shallow, submodules/],
    ["git+https://h/shop?host=evil", "ParameterDenied", /'host'/],
    ["https://h/a.tar.gz?token=x", "ParameterDenied", /'token'.*allowed: dir, narHash/],
    ["github:acme/shop?dir=../etc", "ParameterDenied", /'dir' must be a relative directory/],
    ["github:acme/shop?dir=/etc", "ParameterDenied", /'dir'/],
    ["github:acme/shop?dir=a/./b", "ParameterDenied", /'dir'/],
    ["github:acme/shop?dir=a%2F..", "ParameterDenied", /'dir'/],
    ["github:acme/shop?rev=qqqqqqqqqqqqqqqqqqqqqqqqqqo=", "ParameterDenied", /'rev' must be a commit hash of 40 hex digits/],
    ["git+https://h/shop?shallow=true", "ParameterDenied", /'shallow' must be 0 or 1/],
    // malformed
    ["", "Invalid", /empty/],
    ["github:acme/shop#web", "Invalid", /'#web'.*attribute/],
    ["github:acme/shop#", "Invalid", /'#'/],
    ["github:acme", "Invalid", /owner and a repository/],
    [`github:acme/shop?ref=main&rev=${REV}`, "Invalid", /both a branch\/tag and a commit/],
    ["github:acme/shop?ref=main&ref=dev", "Invalid", /'ref' is given twice/],
    ["github:acme/shop?", "Invalid", /empty parameter/],
    ["github:acme/shop?ref=main&", "Invalid", /empty parameter/],
    ["github:acme/shop?ref", "Invalid", /'ref' has no value/],
    ["github:acme//shop", "Invalid", /not in the form allowed for github: refs; write github:OWNER\/REPO/],
    ["github://acme/shop/x", "Invalid", /form allowed for github/],
    ["git+https:example.com/shop", "Invalid", /write git\+https:\/\/HOST\/PATH/],
    ["git+ssh://git@github.com:acme/shop", "Invalid", /git\+ssh:\/\/git@HOST\/PATH/],
    ["bitbucket:acme/shop", "Invalid", /unsupported scheme/],
    ["GitHub:acme/shop", "Invalid", /lower case/],
    ["git+https://[::1]/shop", "AddressDenied", /IPv6 address literal/],
    // unsafe characters
    ["github:acme/shop;rm", "UnsafeCharacter", /shell metacharacter ';' at position 16/],
    ["github:acme/shop$(id)", "UnsafeCharacter", /shell metacharacter '\$'/],
    ["github:acme/shop`id`", "UnsafeCharacter", /shell metacharacter '`'/],
    ["github:acme/shop|x", "UnsafeCharacter", /'\|'/],
    ["github:acme/shop>x", "UnsafeCharacter", /'>'/],
    ["github:acme/shop<x", "UnsafeCharacter", /'<'/],
    ["github:acme/shop\\x", "UnsafeCharacter", /'\\'/],
    ["github:acme/shop'x", "UnsafeCharacter", /'''/],
    ["github:acme/shop!x", "UnsafeCharacter", /'!'/],
    ["github:acme/shop x", "UnsafeCharacter", /a space/],
    ["github:acme/shop\tx", "UnsafeCharacter", /whitespace \(U\+0009\)/],
    ["github:acme/shop\nx", "UnsafeCharacter", /U\+000A/],
    ["github:acme/shop\u0000", "UnsafeCharacter", /control character \(U\+0000\)/],
    ["github:acme/shop\u007f", "UnsafeCharacter", /control character \(U\+007F\)/],
    ["github:acme/shöp", "UnsafeCharacter", /non-ASCII character 'ö'/],
    ["github:acme/shop?dir=a%20b", "UnsafeCharacter", /escape '%20'/],
    ["github:acme/shop?dir=a%26b", "UnsafeCharacter", /escape '%26'/],
    ["github:acme/shop?dir=a%3Bb", "UnsafeCharacter", /escape '%3B'/],
    ["github:acme/shop?dir=a%", "UnsafeCharacter", /escape '%'/],
    ["github:acme/shop&x", "Invalid", /form allowed for github/],
    // credentials
    ["git+https://user:hunter2@git.example.com/shop", "CredentialsInUrl", /contains user credentials.*Secret/],
    ["git+https://token@git.example.com/shop", "CredentialsInUrl", /credentials/],
    ["https://user@example.com/a.tar.gz", "CredentialsInUrl", /credentials/],
    ["git+ssh://git:hunter2@github.com/acme/shop", "CredentialsInUrl", /password.*ssh key Secret/],
    // ssh without a key
    ["git+ssh://git@github.com/acme/shop", "SshKeyRequired", /need an ssh key.*key Secret/],
    // length
    ["github:acme/" + "x".repeat(1100), "TooLong", /1112 characters long; at most 1024/],
  ];
  it.each(denied)("denies %s (%s)", (input, code, reason) => {
    const verdict = checkFlakeRef(input, defaultFlakeRefPolicy);
    expect(verdict).toMatchObject({ ok: false, code });
    if (!verdict.ok) {
      expect(verdict.reason).toMatch(reason);
      expect(verdict.reason).not.toContain("hunter2");
    }
  });
});

describe("checkFlakeRef: addresses (SSRF, issue 12 item 6)", () => {
  const ssrf: [string, RegExp][] = [
    ["git+https://10.0.0.1/r", /'10\.0\.0\.1' is in a private range \(RFC 1918\), 10\.0\.0\.0\/8.*allowedAddressRanges/],
    ["tarball+https://169.254.169.254/x", /link-local range \(cloud metadata/],
    ["https://[::ffff:127.0.0.1]/a.tar.gz", /IPv6 address literal in the loopback range, 127\.0\.0\.0\/8.*write a host name/],
    ["https://[::1]/a.tar.gz", /IPv6 address literal in the loopback range, ::1\/128/],
    ["https://2130706433/a.tar.gz", /'2130706433' \(127\.0\.0\.1\) is in the loopback range/],
    ["git+https://0x7f.1/r", /\(127\.0\.0\.1\) is in the loopback range/],
    ["git+https://0177.0.0.1/r", /\(127\.0\.0\.1\) is in the loopback range/],
    ["git+https://0xa000001/r", /\(10\.0\.0\.1\) is in a private range/],
    ["git+https://127.0.0.1./r", /loopback/],
    ["git+https://100.64.0.1/r", /carrier-grade NAT/],
    ["git+https://172.16.5.4:8443/r", /private range/],
    ["git+https://192.168.0.1/r", /private range/],
    ["git+https://0.0.0.0/r", /unspecified/],
    ["git+https://224.0.0.251/r", /multicast/],
    ["git+https://255.255.255.255/r", /reserved and broadcast/],
    ["git+https://[fd12::1]/r", /unique local/],
    ["git+https://[fe80::1]/r", /link-local/],
    ["git+ssh://git@10.1.2.3/acme/shop", /private range/],
    ["git+https://localhost/r", /localhost \(loopback\)/],
    ["git+https://api.LOCALHOST:6443/r", /localhost/],
    ["git+https://x.123/r", /ends in a number but is not an IP address/],
    ["git+https://010.8.8.8/r", /8\.8\.8\.8 in an unusual spelling; write 8\.8\.8\.8/],
  ];
  it.each(ssrf)("denies %s by default, saying which range and how to allow it", (input, reason) => {
    const verdict = checkFlakeRef(input, defaultFlakeRefPolicy, { hasSshKey: true });
    expect(verdict).toMatchObject({ ok: false, code: "AddressDenied" });
    if (!verdict.ok) expect(verdict.reason).toMatch(reason);
    const cel = flakeRefAddressCelRegexes(defaultFlakeRefPolicy);
    // The CRD denies it too (by the syntax regex for IPv6 brackets, by the address rule otherwise).
    const celAllows = new RegExp(flakeRefCelRegex()).test(input) && (!new RegExp(cel.denied).test(input) || new RegExp(cel.allowed).test(input));
    expect(celAllows).toBe(false);
  });

  it("denies ?host= overrides that name a private address", () => {
    const p = policy({ allowHostOverride: true });
    expect(checkFlakeRef("github:acme/shop?host=10.0.0.1", p)).toMatchObject({ ok: false, code: "AddressDenied" });
    expect(checkFlakeRef("github:acme/shop?host=127.1", p)).toMatchObject({ ok: false, code: "AddressDenied" });
    expect(checkFlakeRef("github:acme/shop?host=ghe.example.com", p)).toMatchObject({ ok: true });
  });

  it("allows public addresses and names, and the ranges an admin allows", () => {
    for (const ok of ["git+https://1.2.3.4/r", "git+https://172.32.0.1:8443/r", "git+https://10.0.0.1.nip.io/r", "git+https://8.8.8.8/r"]) {
      expect(checkFlakeRef(ok, defaultFlakeRefPolicy), ok).toMatchObject({ ok: true });
    }
    const p = policy({ allowedAddressRanges: ["10.20.0.0/16"] });
    expect(checkFlakeRef("git+https://10.20.3.4/r", p)).toMatchObject({ ok: true });
    expect(checkFlakeRef("git+https://10.21.3.4/r", p)).toMatchObject({ ok: false, code: "AddressDenied" });
    expect(checkFlakeRef("git+https://localhost/r", p)).toMatchObject({ ok: false, code: "AddressDenied" });
    const cel = flakeRefAddressCelRegexes(p);
    expect(new RegExp(cel.allowed).test("git+https://10.20.3.4/r")).toBe(true);
    expect(new RegExp(cel.allowed).test("git+https://10.21.3.4/r")).toBe(false);
  });

  it("rejects allowedAddressRanges that are not CIDRs", () => {
    expect(FlakeRefPolicySchema.safeParse({ allowedAddressRanges: ["10.0.0.0/33"] }).success).toBe(false);
    expect(FlakeRefPolicySchema.safeParse({ allowedAddressRanges: ["example.com"] }).success).toBe(false);
    expect(FlakeRefPolicySchema.safeParse({ allowedAddressRanges: ["fd00::/8", "127.0.0.1"] }).success).toBe(true);
  });
});

describe("checkFlakeRef under wider policies", () => {
  it("allows the local git+http server the tests use, when configured", () => {
    const p = policy({ allowedSchemes: ["git+http"], allowedAddressRanges: ["127.0.0.0/8"] });
    expect(checkFlakeRef("git+http://127.0.0.1:39417/shop.git?ref=main", p)).toMatchObject({ ok: true, scheme: "git+http" });
    expect(checkFlakeRef("git+http://localhost:39417/shop.git", p)).toMatchObject({ ok: true });
    // The scheme alone does not open loopback.
    expect(checkFlakeRef("git+http://127.0.0.1:39417/shop.git", policy({ allowedSchemes: ["git+http"] }))).toMatchObject({ ok: false, code: "AddressDenied" });
    expect(checkFlakeRef("github:acme/shop", p)).toMatchObject({ ok: false, code: "SchemeDenied", reason: expect.stringMatching(/allowed: git\+http:\)/) });
  });

  it("allows host overrides only when configured", () => {
    const p = policy({ allowHostOverride: true });
    expect(checkFlakeRef("github:acme/shop?host=ghe.example.com", p)).toMatchObject({ ok: true });
    expect(checkFlakeRef("gitlab:acme/shop?host=gitlab.example.com&ref=main", p)).toMatchObject({ ok: true });
    expect(checkFlakeRef("git+https://h/x?host=y", p)).toMatchObject({ ok: false, code: "ParameterDenied" });
  });

  it("allows paths and registry refs when configured, but not ambiguous relative paths", () => {
    const p = policy({ allowedSchemes: ["path", "flake", "git+file", "file", "tarball+file"] });
    for (const ok of [
      "./shop",
      "../shop?dir=web",
      "/src/shop",
      ".",
      "path:/src/shop",
      `path:/src?rev=${REV}`,
      "nixpkgs",
      `nixpkgs/main/${REV}`,
      "flake:nixpkgs?dir=lib",
      "git+file:///src/shop?ref=main",
      "file:///srv/a.tar.gz",
      "tarball+file:///srv/a",
    ]) {
      expect(checkFlakeRef(ok, p), ok).toMatchObject({ ok: true });
    }
    // `shop/web` is the registry ref `shop` at branch `web` for Nix; `shop+x/web` is a relative path.
    expect(checkFlakeRef("shop/web", p)).toMatchObject({ ok: true, ref: { type: "indirect", id: "shop", ref: "web" } });
    expect(checkFlakeRef("shop+x/web", p)).toMatchObject({ ok: false, code: "Invalid", reason: expect.stringMatching(/write \.\/shop\+x\/web/) });
    expect(checkFlakeRef("path:shop", p)).toMatchObject({ ok: false, code: "Invalid" });
    expect(checkFlakeRef("git+file:shop", p)).toMatchObject({ ok: false, code: "Invalid" });
  });

  it("denies everything under an empty allowlist", () => {
    const p = policy({ allowedSchemes: [] });
    expect(checkFlakeRef("github:acme/shop", p)).toMatchObject({ ok: false, code: "SchemeDenied", reason: expect.stringMatching(/allowed: none/) });
    expect(flakeRefCelRegex(p)).toBe("^$");
  });

  it("honours maxLength", () => {
    const p = policy({ maxLength: 20 });
    expect(checkFlakeRef("github:acme/shop", p)).toMatchObject({ ok: true });
    expect(checkFlakeRef("github:acme/shop/main", p)).toMatchObject({ ok: false, code: "TooLong" });
  });
});

describe("flakeRefCelRegex", () => {
  it("stays within the common subset of RE2 and JavaScript", () => {
    for (const p of [defaultFlakeRefPolicy, widest]) {
      const source = flakeRefCelRegex(p);
      expect(() => new RegExp(source)).not.toThrow();
      expect(source).toMatch(/^\^\(\?:.*\)\$$/);
      // No lookaround, backreferences, named groups, lazy quantifiers, Unicode classes or \d/\w/\s
      // (whose meaning differs between the two engines).
      expect(source).not.toMatch(/\(\?[=!<]|\\[1-9]|\\[dDwWsSpPkb]|[*+?}]\?/);
      // RE2 allows at most 1000 repetitions.
      for (const m of source.matchAll(/\{(\d+)(?:,(\d*))?\}/g)) expect(Number(m[1])).toBeLessThanOrEqual(1000);
    }
    expect(ATTRIBUTE_REGEX_SOURCE).not.toMatch(/\(\?[=!<]|\\[1-9]|\\[dDwWsSpPkb]/);
  });

  it("matches the default policy's examples", () => {
    const rx = new RegExp(flakeRefCelRegex());
    expect(rx.test("github:acme/shop?ref=main&dir=web")).toBe(true);
    expect(rx.test("git+ssh://git@github.com/acme/shop")).toBe(true);
    expect(rx.test("https://example.com/a.tar.gz")).toBe(true);
    expect(rx.test("https://example.com/a")).toBe(false);
    expect(rx.test("path:/x")).toBe(false);
    expect(rx.test("nixpkgs")).toBe(false);
    expect(rx.test("github:acme/shop?host=x")).toBe(false);
    expect(rx.test("github:acme/shop;id")).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// Generated inputs: mostly well-formed refs of every scheme, then mutated.

const safeWord = fc.oneof(
  fc.constantFrom("acme", "shop", "main", "v1.2", "release", "x86_64", "a-b", "web", "nix", "k8s.d", "~me", "group%2Fsub"),
  fc.string({ unit: fc.constantFrom(..."abcXYZ019-._~+=:@"), minLength: 1, maxLength: 6 }),
);
const hex40 = fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF"), minLength: 40, maxLength: 40 });
const segments = (min: number, max: number) => fc.array(safeWord, { minLength: min, maxLength: max }).map((ws) => ws.join("/"));
const host = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom("example.com", "git.example.com:8443", "127.0.0.1:8080", "h", "a_b.c", "[::1]", "ex%41mple.com", "") },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "10.1.2.3",
      "1.2.3.4",
      "2130706433",
      "0x7f.1",
      "010.1.1.1",
      "169.254.169.254:80",
      "localhost",
      "a.LocalHost.",
      "x.123",
      "172.32.0.1",
      "8.8.8.8.",
    ),
  },
);
const archive = fc.constantFrom(".tar.gz", ".zip", ".tar", ".tgz", ".tar.zst", ".tar.bz2", ".tar.xz", "", ".TAR.GZ");
const paramKey = fc.constantFrom("ref", "rev", "dir", "host", "narHash", "shallow", "submodules", "revCount", "lastModified", "allRefs", "foo", "%72ef", "");
const paramValue = fc.oneof(
  safeWord,
  hex40,
  segments(1, 3),
  fc.constantFrom(NAR, NAR.replace(/\//g, "%2F"), "0", "1", "true", "../x", "a/./b", "", "qqqqqqqqqqqqqqqqqqqqqqqqqqo=", "refs/heads/main", "-x", "a..b"),
);
const query = fc
  .array(fc.oneof({ weight: 8, arbitrary: fc.tuple(paramKey, paramValue).map(([k, v]) => `${k}=${v}`) }, { weight: 1, arbitrary: paramKey }), { maxLength: 3 })
  .map((kvs) => (kvs.length ? "?" + kvs.join("&") : ""));

const wellFormed: fc.Arbitrary<string> = fc.oneof(
  fc.tuple(fc.constantFrom("github", "gitlab", "sourcehut"), segments(2, 4), fc.option(hex40)).map(([s, p, r]) => `${s}:${p}${r ? "/" + r : ""}`),
  fc
    .tuple(
      fc.constantFrom("git+https", "git+http", "git", "hg+https", "hg+http", "tarball+https", "tarball+http", "file+https", "file+http", "https", "http"),
      host,
      segments(0, 3),
      archive,
    )
    .map(([s, h, p, a]) => `${s}://${h}/${p}${a}`),
  fc
    .tuple(fc.constantFrom("git+ssh", "hg+ssh"), fc.constantFrom("", "git@", "git:pw@", "a.b@"), host, fc.constantFrom("/", ":"), segments(1, 3))
    .map(([s, u, h, sep, p]) => `${s}://${u}${h}${sep}${p}`),
  fc
    .tuple(
      fc.constantFrom("git+file", "hg+file", "tarball+file", "file+file", "file", "path"),
      fc.constantFrom(":", ":/", "://", ":///", "://host/"),
      segments(0, 3),
      archive,
    )
    .map(([s, sep, p, a]) => `${s}${sep}${p}${a}`),
  fc.tuple(fc.constantFrom(".", "./", "../", "/", ""), segments(0, 3)).map(([pre, p]) => pre + p),
  fc
    .tuple(fc.constantFrom("nixpkgs", "flake:nixpkgs", "n1_x-y", "1x"), fc.option(safeWord), fc.option(hex40))
    .map(([id, r, c]) => `${id}${r ? "/" + r : ""}${c ? "/" + c : ""}`),
);

const mutation = fc.oneof(
  { weight: 6, arbitrary: fc.constant((s: string) => s) },
  {
    weight: 2,
    arbitrary: fc.tuple(fc.nat(), fc.constantFrom(..."&;|$`<>\\ \t\n\u0000\u007f#%'\"!()*[]{}^é?/=@:")).map(
      ([i, c]) =>
        (s: string) =>
          s.slice(0, i % (s.length + 1)) + c + s.slice(i % (s.length + 1)),
    ),
  },
  { weight: 1, arbitrary: fc.nat().map((i) => (s: string) => s.slice(0, i % (s.length + 1))) },
  { weight: 1, arbitrary: fc.constant((s: string) => s.toUpperCase()) },
  { weight: 1, arbitrary: fc.constant((s: string) => s + "#web") },
);

const generated: fc.Arbitrary<string> = fc.oneof(
  { weight: 10, arbitrary: fc.tuple(wellFormed, query, mutation).map(([r, q, m]) => m(r + q)) },
  { weight: 1, arbitrary: fc.string({ maxLength: 30 }) },
);

/** Inputs that contain a shell metacharacter other than `&`, whitespace, a control or a non-ASCII character. */
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[;|$`<>\\\s\x00-\x1f\x7f\u0080-\u{10ffff}]/u;

const policies: [string, FlakeRefPolicy][] = [
  ["default", defaultFlakeRefPolicy],
  ["widest", widest],
  ["local", policy({ allowedSchemes: ["path", "flake", "git+file", "file", "tarball+file", "file+file", "hg+file"] })],
  ["plain http", policy({ allowedSchemes: ["http", "git+http", "tarball+http", "file+http", "git", "hg+http", "hg+ssh"] })],
  ["forges with hosts", policy({ allowedSchemes: ["github", "gitlab", "sourcehut"], allowHostOverride: true })],
  [
    "local addresses",
    policy({ allowedSchemes: ["git+https", "git+http", "github"], allowHostOverride: true, allowedAddressRanges: ["127.0.0.0/8", "10.1.0.0/16", "fd00::/8"] }),
  ],
  ["nothing", policy({ allowedSchemes: [] })],
];

describe("checkFlakeRef properties", () => {
  it("never allows shell metacharacters, whitespace, control or non-ASCII characters, even under the widest policy", () => {
    fc.assert(
      fc.property(generated, fc.nat(), fc.constantFrom(..."；;|$`<>\\ \t\r\n\u0000\u001b\u007f\u00a0\u2028é"), (input, at, ch) => {
        const i = at % (input.length + 1);
        const bad = input.slice(0, i) + ch + input.slice(i);
        expect(checkFlakeRef(bad, widest, { hasSshKey: true }).ok).toBe(false);
        if (FORBIDDEN.test(input)) expect(checkFlakeRef(input, widest, { hasSshKey: true }).ok).toBe(false);
      }),
      { numRuns: 10_000 },
    );
  });

  it("allows '&' only between key=value query parameters", () => {
    fc.assert(
      fc.property(generated, (input) => {
        const verdict = checkFlakeRef(input, widest, { hasSshKey: true });
        if (!verdict.ok || !input.includes("&")) return;
        const q = input.indexOf("?");
        expect(q).toBeGreaterThan(0);
        expect(input.slice(0, q)).not.toContain("&");
        for (const token of input.slice(q + 1).split("&")) expect(token).toMatch(/^[A-Za-z]+=[^&]*$/);
      }),
      { numRuns: 10_000 },
    );
  });

  // The CRD regex and the check agree on allow/deny at the syntax level. Intentional differences,
  // all in one direction (the regex lets through, the check denies): what needs real parsing
  // (`Invalid`: a repeated parameter, a malformed commit hash, ref and rev on a github: ref, a
  // bad branch name, too many path segments of a registry ref, ...) and the length limit
  // (`TooLong`, which the CRD states as maxLength).
  it.each(policies)("agrees with the CEL regex under the %s policy", (_name, p) => {
    const main = new RegExp(flakeRefCelRegex(p));
    const address = flakeRefAddressCelRegexes(p);
    const denied = new RegExp(address.denied);
    const allowed = new RegExp(address.allowed);
    // Both CRD rules: the syntax regex and the address rule.
    const rx = { test: (s: string) => main.test(s) && (!denied.test(s) || allowed.test(s)) };
    const seen = { allowed: 0, denied: 0, regexOnly: 0 };
    fc.assert(
      fc.property(generated, (input) => {
        const verdict = checkFlakeRef(input, p, { hasSshKey: true });
        const matches = rx.test(input);
        if (verdict.ok) {
          seen.allowed++;
          expect(matches, `check allows but regex denies: ${JSON.stringify(input)}`).toBe(true);
        } else {
          seen.denied++;
          if (matches) {
            seen.regexOnly++;
            expect(["Invalid", "TooLong"], `regex allows ${JSON.stringify(input)} but check says ${verdict.code}: ${verdict.reason}`).toContain(verdict.code);
          }
        }
      }),
      { numRuns: 10_000 },
    );
    // Loopback and private hosts among the generated ones are denied unless a policy allows them.
    if (p.allowedSchemes.length) expect(seen.allowed).toBeGreaterThan(50);
    expect(seen.denied).toBeGreaterThan(1000);
  });
});

describe("checkAttribute", () => {
  const ok = [
    "default",
    "web",
    "packages.x86_64-linux.web",
    "devShells.x86_64-linux.default",
    "legacyPackages.aarch64-darwin.gtk+",
    "foo'",
    "_private",
    "0ad",
    "a".repeat(ATTRIBUTE_MAX_LENGTH),
  ];
  it.each(ok)("accepts %s", (attr) => {
    expect(checkAttribute(attr)).toBeUndefined();
    expect(attributePattern.test(attr)).toBe(true);
  });

  const bad: [string, RegExp][] = [
    ["", /empty/],
    ["a".repeat(ATTRIBUTE_MAX_LENGTH + 1), /257 characters long; at most 256/],
    ["web;id", /character ';'/],
    ["web$(id)", /character '\$'/],
    ["web`id`", /character '`'/],
    ["web|x", /character '\|'/],
    ["web&", /character '&'/],
    ["a>b", /character '>'/],
    ["a b", /a space/],
    ["a\tb", /whitespace/],
    ["a\u0000", /control character/],
    ["wéb", /non-ASCII/],
    ["a#b", /character '#'/],
    ['"quoted"', /character '"'/],
    ["a/b", /character '\/'/],
    ["a..b", /empty name/],
    [".a", /empty name/],
    ["a.", /empty name/],
    ["-a", /'-a' starts with '-'/],
    ["packages.-x", /'-x' starts with '-'/],
  ];
  it.each(bad)("rejects %j", (attr, reason) => {
    expect(checkAttribute(attr)).toMatch(reason);
    // The length limit is not in the regex (CEL states it as size(self) <= 256).
    expect(attributePattern.test(attr) && attr.length <= ATTRIBUTE_MAX_LENGTH).toBe(false);
  });

  it("agrees with its regex plus the length limit", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: fc.constantFrom(..."ab09_'+-.;$ \t#\"/é"), maxLength: 20 }),
          fc.array(fc.string({ unit: fc.constantFrom(..."ab09_'+-"), maxLength: 8 }), { maxLength: 5 }).map((s) => s.join(".")),
          fc.string({ minLength: 250, maxLength: 260, unit: fc.constantFrom("a", ".", "b") }),
        ),
        (attr) => {
          const byRegex = attributePattern.test(attr) && attr.length <= ATTRIBUTE_MAX_LENGTH;
          expect(checkAttribute(attr) === undefined).toBe(byRegex);
          // eslint-disable-next-line no-control-regex
          if (byRegex) expect(attr).not.toMatch(/[;|&$`<>\\\s\u0000-\u001f]/);
        },
      ),
      { numRuns: 5_000 },
    );
  });
});
