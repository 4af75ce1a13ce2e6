// The CRD checks a flake ref with regexes (RE2, in CEL); `validate` and the controller check it
// with the parser (`checkFlakeRef`). Generated refs (every allowed head, path tails and query
// parameters, good and bad) must get the same verdict from both: a ref the API server stores but
// the controller refuses is a NixImage that never builds, and the reverse is a false reject.
import { describe, expect, it } from "vitest";
import {
  checkFlakeRef,
  defaultFlakeRefPolicy as policy,
  flakeRefAddressCelRegexes,
  flakeRefCelRegex,
  flakeRefSemanticCelRules,
} from "../../src/flake/flake-ref-policy.ts";

const main = new RegExp(flakeRefCelRegex(policy));
const address = flakeRefAddressCelRegexes(policy);
const [denied, allowed] = [new RegExp(address.denied), new RegExp(address.allowed)];
const semantic = flakeRefSemanticCelRules().map((rule) => new RegExp(rule.denied));
/** What the CRD's rules on spec.flake decide (see makeNixImageSpecSchema). */
const crdAccepts = (ref: string) =>
  ref.length <= 1024 && !ref.includes("#") && main.test(ref) && (!denied.test(ref) || allowed.test(ref)) && semantic.every((rule) => !rule.test(ref));

const commit = "0123456789abcdef0123456789abcdef01234567";
const heads = [
  ...["github:acme/shop", "github:~acme/shop", "github:acme/shop.git", "github:a%2Fb/shop", "github:a.b/c_d", "github:acme//shop"],
  ...["gitlab:acme/shop", "gitlab:acme%2Fteam/shop", "sourcehut:~acme/shop"],
  ...["git+https://git.example.com/shop.git", "git+https://git.example.com:8443/shop.git", "git+https://git.example.com", "git+https://git.example.com/"],
  ...[
    "git+https://-x.example.com/x",
    "git+https://x..example.com/x",
    "git+https://x.example.com./x",
    "git+https://git.example.com/a%20b",
    "git+https://git.example.com/~u/x",
  ],
  ...[
    "git+https://GIT.example.com/x",
    "git+https://1.2.3.4.5/x",
    "git+https://a.1/x",
    "git+https://x_y.example.com/r",
    "git+https://10.0.0.1/x",
    "git+https://8.8.8.8/x",
  ],
  ...["git+ssh://git@git.example.com/shop.git", "git+ssh://a.b@git.example.com/x", "git+ssh://git@git.example.com:22/x", "git+ssh://git.example.com/x"],
  ...["tarball+https://example.com/shop.tar.gz", "tarball+https://example.com", "tarball+https://example.com/x"],
  ...[
    "https://example.com/shop.tar.gz",
    "https://example.com/x.tar.gz.zip",
    "https://example.com/.tar.gz",
    "https://example.com/a//b.tar.gz",
    "https://8.8.8.8/x.zip",
  ],
  ...["git+http://git.example.com/x", "git+file:///srv/x", "path:/srv/x", "nixpkgs", "flake:nixpkgs", "hg+https://hg.example.com/x"],
];
const tails = ["", "/main", `/${commit}`, "/a/b", "/a..b", "/~x", "/:x", "/@x", "/=x", "/+x", "/x.lock", "/-x", "/_x", "/.x", "/x/", "//x", "/a%2Fb", "/@"];
const values: Record<string, string[]> = {
  ref: ["main", "a..b", "a//b", "a/.b", "x.lock", "x/", "x.", "a/b", "v1+x", "-x", "a.lock/b", "HEAD", "refs/heads/main", "", "a%20b"],
  rev: [commit, commit.toUpperCase(), commit.slice(1), "main"],
  dir: ["a", "a/b", "..a", ".a", "a/../b", "a/./b", "../x"],
  narHash: [`sha256-${"A".repeat(43)}=`, `sha256-${"A".repeat(43)}`, `sha256-${"A".repeat(42)}%3D`, "sha256-x"],
  shallow: ["0", "1", "2"],
  submodules: ["1", "yes"],
  host: ["x.com", "10.0.0.1"],
  foo: ["bar"],
};
const queries = [
  "",
  ...Object.entries(values).flatMap(([key, vs]) => vs.map((v) => `?${key}=${v}`)),
  `?ref=main&rev=${commit}`,
  `?rev=${commit}&ref=main`,
  "?ref=a&ref=b",
  "?dir=a&dir=b",
  `?rev=${commit}&rev=${commit}`,
  "?ref=main&dir=a",
  "?shallow=1&shallow=1",
  "?ref=main&",
  "?&ref=main",
  "?ref",
];

describe("flake refs: the CRD's rules and checkFlakeRef agree", () => {
  const refs = heads.flatMap((head) => tails.flatMap((tail) => queries.map((query) => head + tail + query)));

  it(`on ${refs.length} generated refs`, () => {
    const disagreements = refs.flatMap((ref) => {
      const verdict = checkFlakeRef(ref, policy, { hasSshKey: true });
      if (crdAccepts(ref) === verdict.ok) return [];
      return [`${ref}: the CRD ${crdAccepts(ref) ? "accepts" : "rejects"}, checkFlakeRef ${verdict.ok ? "accepts" : `rejects (${verdict.reason})`}`];
    });
    expect(disagreements).toEqual([]);
    // The generated refs are not all bad (or all good): both sides are exercised.
    const accepted = refs.filter(crdAccepts).length;
    expect(accepted).toBeGreaterThan(100);
    expect(refs.length - accepted).toBeGreaterThan(1000);
    // CPU-bound (a few seconds idle): a deadline for a loaded machine, not a timing assertion.
  }, 120_000);
});
