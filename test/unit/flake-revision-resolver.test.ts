import { describe, expect, it } from "vitest";
import { encodePktLine } from "../../src/flake/git-ref-advertisement.ts";
import { displayUrl, resolveRevision, RevisionResolveError, type FetchLike, type ResolveRevisionOptions } from "../../src/flake/revision-resolver.ts";

const A = "a".repeat(40);
const B = "b".repeat(40);
const C = "c".repeat(40);
const D = "d".repeat(40);
const ADV_TYPE = "application/x-git-upload-pack-advertisement";

function pkts(...lines: string[]): Uint8Array {
  const parts = lines.map((l) => (l === "" ? new TextEncoder().encode("0000") : encodePktLine(l)));
  return Uint8Array.from(parts.flatMap((p) => [...p]));
}

function advertisement(refs: [string, string][], head = "refs/heads/main"): Uint8Array {
  const lines = ["# service=git-upload-pack\n", ""];
  refs.forEach(([name, oid], i) => lines.push(i === 0 ? `${oid} ${name}\0multi_ack symref=HEAD:${head} agent=git/2.45\n` : `${oid} ${name}\n`));
  lines.push("");
  return pkts(...lines);
}

const standardRefs: [string, string][] = [
  ["HEAD", A],
  ["refs/heads/dev", B],
  ["refs/heads/main", A],
  ["refs/tags/dev", C],
  ["refs/tags/v1", C],
  ["refs/tags/v2", D],
  ["refs/tags/v2^{}", B],
];

interface Call {
  url: string;
  headers: Record<string, string>;
  redirect: string | undefined;
}

/** A fetch that answers from a function of the URL and records every call. */
function fakeFetch(answer: (url: string, init: RequestInit) => Response | Promise<Response>): FetchLike & { calls: Call[] } {
  const calls: Call[] = [];
  const f = async (url: string, init: RequestInit) => {
    calls.push({ url, headers: { ...(init.headers as Record<string, string>) }, redirect: init.redirect });
    return answer(url, init);
  };
  return Object.assign(f, { calls });
}

const smart = (body: Uint8Array, status = 200) => new Response(body, { status, headers: { "content-type": ADV_TYPE } });

async function resolveWith(ref: string, answer: Parameters<typeof fakeFetch>[0], options: ResolveRevisionOptions = {}) {
  const fetchImpl = fakeFetch(answer);
  const result = await resolveRevision(ref, { ...options, fetchImpl });
  return { result, calls: fetchImpl.calls };
}

async function errorOf(p: Promise<unknown>): Promise<RevisionResolveError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(RevisionResolveError);
    return e as RevisionResolveError;
  }
  throw new Error("expected a RevisionResolveError");
}

describe("resolveRevision: what is requested", () => {
  it.each([
    ["github:acme/shop", "https://github.com/acme/shop.git/info/refs?service=git-upload-pack"],
    ["github:acme/shop/dev", "https://github.com/acme/shop.git/info/refs?service=git-upload-pack"],
    ["gitlab:group%2Fsub/repo?ref=main", "https://gitlab.com/group/sub/repo.git/info/refs?service=git-upload-pack"],
    ["sourcehut:~user/repo", "https://git.sr.ht/~user/repo/info/refs?service=git-upload-pack"],
    ["github:acme/shop?host=ghe.example.com", "https://ghe.example.com/acme/shop.git/info/refs?service=git-upload-pack"],
    ["git+https://git.example.com/r.git/?ref=main", "https://git.example.com/r.git/info/refs?service=git-upload-pack"],
    ["git+http://127.0.0.1:8080/r.git", "http://127.0.0.1:8080/r.git/info/refs?service=git-upload-pack"],
  ])("%s -> GET %s", async (ref, url) => {
    const { calls } = await resolveWith(ref, () => smart(advertisement(standardRefs)), { allowedAddressRanges: ["127.0.0.0/8"] });
    expect(calls).toHaveLength(1);
    expect(calls[0]!.url).toBe(url);
    expect(calls[0]!.redirect).toBe("manual");
    expect(calls[0]!.headers["User-Agent"]).toMatch(/^git\/2\.0 \(nix-image-operator\)$/);
    expect(calls[0]!.headers["Git-Protocol"]).toBeUndefined();
    expect(calls[0]!.headers.Authorization).toBeUndefined();
  });

  it("returns a pinned revision without any request", async () => {
    const { result, calls } = await resolveWith(`github:acme/shop/${B}`, () => {
      throw new Error("no request expected");
    });
    expect(result).toEqual({ rev: B, refName: "HEAD", pinned: true });
    expect(calls).toHaveLength(0);
    const git = await resolveWith(`git+https://h/r.git?ref=dev&rev=${B}`, () => smart(new Uint8Array()));
    expect(git.result).toEqual({ rev: B, refName: "refs/heads/dev", pinned: true });
    expect(git.calls).toHaveLength(0);
  });

  it.each([
    ["tarball+https://example.com/src.tar.gz", /archive/],
    ["https://example.com/src.tar.gz", /archive/],
    ["https://example.com/flake.nix", /archive/],
    ["git+ssh://git@example.com/r.git", /git\+ssh/],
    ["git+file:///src/repo", /git\+file/],
    ["hg+https://example.com/r", /Mercurial/],
    ["path:/src", /path ref/],
    ["nixpkgs", /registry/],
  ])("%s is unpollable", async (ref, reason) => {
    const { result, calls } = await resolveWith(ref, () => smart(new Uint8Array()));
    expect(result).toMatchObject({ unpollable: true });
    expect((result as { reason: string }).reason).toMatch(reason);
    expect(calls).toHaveLength(0);
  });

  it("rejects an unparsable flake ref as invalid-ref", async () => {
    const e = await errorOf(resolveRevision("github:only-owner", { fetchImpl: fakeFetch(() => smart(new Uint8Array())) }));
    expect(e.kind).toBe("invalid-ref");
  });
});

describe("resolveRevision: matching refs", () => {
  const table: [string, string, { rev: string; refName: string }][] = [
    ["HEAD follows the symref", "github:acme/shop", { rev: A, refName: "refs/heads/main" }],
    ["a branch", "github:acme/shop/main", { rev: A, refName: "refs/heads/main" }],
    ["a branch wins over a tag of the same name", "github:acme/shop/dev", { rev: B, refName: "refs/heads/dev" }],
    ["a lightweight tag", "github:acme/shop/v1", { rev: C, refName: "refs/tags/v1" }],
    ["an annotated tag is peeled to its commit", "github:acme/shop/v2", { rev: B, refName: "refs/tags/v2" }],
    ["a full branch name", "git+https://h/r.git?ref=refs/heads/dev", { rev: B, refName: "refs/heads/dev" }],
    ["a full tag name, peeled", "git+https://h/r.git?ref=refs/tags/v2", { rev: B, refName: "refs/tags/v2" }],
    ["a full tag name, lightweight", "git+https://h/r.git?ref=refs/tags/v1", { rev: C, refName: "refs/tags/v1" }],
  ];
  it.each(table)("%s", async (_name, ref, expected) => {
    const { result } = await resolveWith(ref, () => smart(advertisement(standardRefs)));
    expect(result).toEqual(expected);
  });

  it("a tag listed before a branch of the same name still loses to the branch", async () => {
    const refs: [string, string][] = [
      ["HEAD", A],
      ["refs/tags/x", C],
      ["refs/heads/x", B],
    ];
    const { result } = await resolveWith("github:o/r/x", () => smart(advertisement(refs)));
    expect(result).toEqual({ rev: B, refName: "refs/heads/x" });
  });

  it("HEAD without a symref (detached) resolves to HEAD itself", async () => {
    const body = pkts("# service=git-upload-pack\n", "", `${D} HEAD\0multi_ack\n`, `${A} refs/heads/main\n`, "");
    const { result } = await resolveWith("github:o/r", () => smart(body));
    expect(result).toEqual({ rev: D, refName: "HEAD" });
  });

  it("stops reading once a branch has been found", async () => {
    const head = advertisement([
      ["HEAD", A],
      ["refs/heads/main", A],
    ]).subarray(0, -4); // without the final flush
    let cancelled = false;
    let pulls = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulls++;
        if (pulls === 1) controller.enqueue(head);
        // afterwards: never more data, never the end (like a huge list of pull-request refs)
        else return new Promise(() => {});
      },
      cancel() {
        cancelled = true;
      },
    });
    const { result } = await resolveWith("github:o/r/main", () => new Response(body, { headers: { "content-type": ADV_TYPE } }), { timeoutMs: 5_000 });
    expect(result).toEqual({ rev: A, refName: "refs/heads/main" });
    expect(cancelled).toBe(true);
  });

  it("follows an annotated tag's peeled line split across chunks", async () => {
    const wire = advertisement(standardRefs);
    const chunks = Array.from({ length: Math.ceil(wire.length / 7) }, (_, i) => wire.subarray(i * 7, i * 7 + 7));
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const c of chunks) controller.enqueue(c);
        controller.close();
      },
    });
    const { result } = await resolveWith("github:o/r/v2", () => new Response(body, { headers: { "content-type": ADV_TYPE } }));
    expect(result).toEqual({ rev: B, refName: "refs/tags/v2" });
  });

  it("a dumb server (text/plain info/refs) resolves branches and tags", async () => {
    const body = `${A}\trefs/heads/main\n${D}\trefs/tags/v2\n${B}\trefs/tags/v2^{}\n`;
    const answer = () => new Response(body, { headers: { "content-type": "text/plain" } });
    expect((await resolveWith("git+https://h/r.git?ref=main", answer)).result).toEqual({ rev: A, refName: "refs/heads/main" });
    expect((await resolveWith("git+https://h/r.git?ref=v2", answer)).result).toEqual({ rev: B, refName: "refs/tags/v2" });
    const e = await errorOf(resolveWith("git+https://h/r.git", answer));
    expect(e.kind).toBe("ref-not-found");
    expect(e.message).toMatch(/dumb HTTP protocol.*\?ref=main/);
  });
});

describe("resolveRevision: errors", () => {
  it("names the missing ref and the branches and tags there are", async () => {
    const e = await errorOf(resolveWith("github:acme/shop/feature", () => smart(advertisement(standardRefs))));
    expect(e.kind).toBe("ref-not-found");
    expect(e.ref).toBe("feature");
    expect(e.transient).toBe(false);
    expect(e.message).toBe('ref "feature" not found in https://github.com/acme/shop.git; the repository has branches dev, main and tags dev, v1, v2');
  });

  it("shortens long branch lists", async () => {
    const refs: [string, string][] = [["HEAD", A], ...Array.from({ length: 30 }, (_, i): [string, string] => [`refs/heads/b${String(i).padStart(2, "0")}`, A])];
    const e = await errorOf(resolveWith("github:o/r/nope", () => smart(advertisement(refs, "refs/heads/b00"))));
    expect(e.message).toMatch(/branches b00, b01, .*, b11 \(and 18 more\) and no tags$/);
  });

  it("an empty repository", async () => {
    const empty = pkts("# service=git-upload-pack\n", "", `${"0".repeat(40)} capabilities^{}\0multi_ack\n`, "");
    expect((await errorOf(resolveWith("github:o/r", () => smart(empty)))).message).toMatch(
      /default branch of https:\/\/github.com\/o\/r.git: the repository is empty/,
    );
    expect((await errorOf(resolveWith("github:o/r/main", () => smart(empty)))).message).toMatch(/ref "main" not found .*the repository is empty/);
  });

  it.each([
    [
      404,
      "repository-not-found",
      /^repository https:\/\/github.com\/o\/r.git not found \(HTTP 404 from https:\/\/github.com\/o\/r.git\/info\/refs\?service=git-upload-pack\)$/,
      false,
    ],
    [401, "unauthorized", /^https:\/\/github.com\/o\/r.git refused anonymous access \(HTTP 401\): the repository is private or does not exist/, false],
    [403, "unauthorized", /HTTP 403/, false],
    [500, "http-status", /answered HTTP 500/, true],
    [503, "http-status", /answered HTTP 503/, true],
    [429, "http-status", /answered HTTP 429/, true],
    [400, "http-status", /answered HTTP 400/, false],
  ] as const)("HTTP %i -> %s", async (status, kind, message, transient) => {
    const e = await errorOf(resolveWith("github:o/r", () => new Response("nope", { status })));
    expect(e.kind).toBe(kind);
    expect(e.status).toBe(status);
    expect(e.transient).toBe(transient);
    expect(e.message).toMatch(message);
  });

  it("an HTML page is not a git server", async () => {
    const e = await errorOf(
      resolveWith("git+https://h/r", () => new Response("<html>login</html>", { headers: { "content-type": "text/html; charset=utf-8" } })),
    );
    expect(e.kind).toBe("protocol");
    expect(e.message).toMatch(/HTML page, not a git ref advertisement/);
  });

  it("a malformed advertisement", async () => {
    const e = await errorOf(resolveWith("git+https://h/r", () => smart(new TextEncoder().encode("001e# service=git"))));
    expect(e.kind).toBe("protocol");
    expect(e.message).toMatch(/did not answer with a valid git ref advertisement: .*ended inside a pkt-line/);
  });

  it("an ERR packet from the server", async () => {
    const e = await errorOf(resolveWith("git+https://h/r", () => smart(pkts("ERR repository disabled\n"))));
    expect(e.kind).toBe("protocol");
    expect(e.message).toMatch(/the git server reported an error: repository disabled/);
  });

  it("caps the response size", async () => {
    const refs: [string, string][] = [["HEAD", A], ...Array.from({ length: 2000 }, (_, i): [string, string] => [`refs/pull/${i}/head`, B])];
    const wire = advertisement(refs);
    let sent = 0;
    const chunked = async () =>
      new Response(
        new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent >= wire.length) return controller.close();
            controller.enqueue(wire.subarray(sent, sent + 1000));
            sent += 1000;
          },
        }),
        { headers: { "content-type": ADV_TYPE } },
      );
    const e = await errorOf(resolveWith("github:o/r/absent", chunked, { maxResponseBytes: 10_000 }));
    expect(e.kind).toBe("too-large");
    expect(e.message).toMatch(/larger than 10000 bytes before ref "absent" turned up/);
    expect(sent).toBeLessThan(20_000); // stopped reading soon after the cap
    // A ref found in the chunk that crosses the cap still counts; so does a whole small answer.
    sent = 0;
    expect(await resolveRevision("github:o/r", { fetchImpl: chunked, maxResponseBytes: 10 })).toEqual({ rev: A, refName: "refs/heads/main" });
  });

  it("times out, also while the body is read", async () => {
    const hang: FetchLike = (_url, init) => new Promise((_resolve, reject) => init.signal?.addEventListener("abort", () => reject(init.signal?.reason)));
    const e1 = await errorOf(resolveRevision("github:o/r", { fetchImpl: hang, timeoutMs: 50 }));
    expect(e1.kind).toBe("timeout");
    expect(e1.transient).toBe(true);
    expect(e1.message).toBe("git ref discovery at https://github.com/o/r.git/info/refs?service=git-upload-pack timed out after 50 ms");

    const slowBody: FetchLike = async (_url, init) => {
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(pkts("# service=git-upload-pack\n", ""));
          init.signal?.addEventListener("abort", () => controller.error(init.signal?.reason));
        },
      });
      return new Response(body, { headers: { "content-type": ADV_TYPE } });
    };
    const e2 = await errorOf(resolveRevision("github:o/r", { fetchImpl: slowBody, timeoutMs: 50 }));
    expect(e2.kind).toBe("timeout");
  });

  it("an abort by the caller rejects with the caller's reason", async () => {
    const hang: FetchLike = (_url, init) => new Promise((_resolve, reject) => init.signal?.addEventListener("abort", () => reject(init.signal?.reason)));
    const controller = new AbortController();
    const reason = new Error("shutting down");
    const p = resolveRevision("github:o/r", { fetchImpl: hang, signal: controller.signal });
    controller.abort(reason);
    await expect(p).rejects.toBe(reason);
    await expect(resolveRevision("github:o/r", { fetchImpl: hang, signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });

  it("network errors are transient and name the cause", async () => {
    const refused: FetchLike = async () => {
      throw new TypeError("fetch failed", { cause: Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }) });
    };
    const e = await errorOf(resolveRevision("git+http://127.0.0.1:1/r.git", { fetchImpl: refused, allowedAddressRanges: ["127.0.0.0/8"] }));
    expect(e.kind).toBe("network");
    expect(e.transient).toBe(true);
    expect(e.message).toBe("cannot reach http://127.0.0.1:1/r.git/info/refs?service=git-upload-pack: fetch failed: connect ECONNREFUSED 127.0.0.1:1");
  });
});

describe("resolveRevision: redirects and credentials", () => {
  const redirect = (location: string, status = 301) => new Response(null, { status, headers: { location } });

  it("follows a few redirects, relative ones too", async () => {
    const { result, calls } = await resolveWith("git+https://old.example.com/r.git?ref=main", (url) => {
      if (url.startsWith("https://old.example.com/")) return redirect("https://new.example.com/r.git/info/refs?service=git-upload-pack");
      if (url === "https://new.example.com/r.git/info/refs?service=git-upload-pack") return redirect("/moved/r.git/info/refs?service=git-upload-pack", 307);
      return smart(advertisement(standardRefs));
    });
    expect(result).toEqual({ rev: A, refName: "refs/heads/main" });
    expect(calls.map((c) => c.url)).toEqual([
      "https://old.example.com/r.git/info/refs?service=git-upload-pack",
      "https://new.example.com/r.git/info/refs?service=git-upload-pack",
      "https://new.example.com/moved/r.git/info/refs?service=git-upload-pack",
    ]);
  });

  it("gives up after maxRedirects", async () => {
    let n = 0;
    const e = await errorOf(resolveWith("git+https://h/r.git", () => redirect(`/loop${n++}`), { maxRedirects: 3 }));
    expect(e.kind).toBe("redirect");
    expect(e.message).toMatch(/more than 3 redirects/);
    expect(n).toBe(4);
  });

  it("refuses a downgrade from https to http and a redirect without Location", async () => {
    expect((await errorOf(resolveWith("git+https://h/r.git", () => redirect("http://h/r.git/info/refs")))).message).toMatch(/refusing the downgrade/);
    expect((await errorOf(resolveWith("git+https://h/r.git", () => new Response(null, { status: 302 })))).message).toMatch(/without a Location header/);
    expect((await errorOf(resolveWith("git+https://h/r.git", () => redirect("ftp://h/x")))).message).toMatch(/redirected to a ftp: URL/);
  });

  it("sends URL credentials as Basic auth, only to the same origin, and never shows them", async () => {
    const { calls } = await resolveWith("git+https://bot:s3cr%40t@git.example.com/r.git?ref=main", (url) =>
      url.startsWith("https://git.example.com/")
        ? redirect("https://cdn.example.net/r.git/info/refs?service=git-upload-pack")
        : smart(advertisement(standardRefs)),
    );
    expect(calls[0]!.url).toBe("https://git.example.com/r.git/info/refs?service=git-upload-pack");
    expect(calls[0]!.headers.Authorization).toBe("Basic " + Buffer.from("bot:s3cr@t").toString("base64"));
    expect(calls[1]!.headers.Authorization).toBeUndefined();

    const e = await errorOf(resolveWith("git+https://bot:s3cret@git.example.com/r.git?ref=main", () => new Response("", { status: 500 })));
    expect(e.message).not.toMatch(/s3cret|bot/);
    expect(e.url).toBe("https://git.example.com/r.git/info/refs?service=git-upload-pack");
    const notFound = await errorOf(resolveWith("git+https://bot:s3cret@git.example.com/r.git?ref=nope", () => smart(advertisement(standardRefs))));
    expect(notFound.message).toMatch(/not found in https:\/\/git.example.com\/r.git;/);
    expect(notFound.message).not.toMatch(/s3cret/);
  });

  it("an explicit authorization option is used as-is", async () => {
    const { calls } = await resolveWith("git+https://h/r.git", () => smart(advertisement(standardRefs)), { authorization: "Bearer t0k" });
    expect(calls[0]!.headers.Authorization).toBe("Bearer t0k");
  });

  it("displayUrl drops user and password", () => {
    expect(displayUrl("https://u:p@h.example/x?y=1")).toBe("https://h.example/x?y=1");
    expect(displayUrl("not a url https://u:p@h/")).toBe("not a url https://u:***@h/");
  });
});
