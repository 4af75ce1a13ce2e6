import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageFormatError } from "../../src/image/formats/format-error.ts";
import {
  isStorePathUnder,
  looksLikeNix2Container,
  nix2ContainerFeatures,
  parseNix2Container,
  readNix2Container,
} from "../../src/image/formats/nix2container.ts";

const busybox = "/nix/store/g1q9rqaxw9hdmq5iyz1y6a6zpfyrz9sf-busybox-static";
const share = "/nix/store/hs17wrcsa7hprw287d4qfqc5ghnq2i4l-n2c-share";
const app = "/nix/store/c3jb20ggb2p6m0ynj8qniycjird2h4li-n2c-hello";
const digest = `sha256:${"97".repeat(32)}`;

// The shape the fixture flake (and nix2container's buildImage) writes.
const image = {
  arch: "amd64",
  created: "1970-01-01T00:00:01Z",
  "image-config": { Entrypoint: [`${app}/bin/hello`], Env: [`PATH=${busybox}/bin`], Labels: { a: "b" } },
  layers: [
    { diff_ids: digest, digest, mediatype: "application/vnd.oci.image.layer.v1.tar", paths: [{ path: busybox }], size: 0 },
    { diff_ids: digest, digest, mediatype: "application/vnd.oci.image.layer.v1.tar", paths: [{ path: share }, { path: app }], size: 0 },
  ],
  version: 1,
};

describe("parseNix2Container", () => {
  it("reads config and the store paths of each layer", () => {
    expect(parseNix2Container(image)).toEqual({
      version: 1,
      config: image["image-config"],
      architecture: "amd64",
      created: "1970-01-01T00:00:01Z",
      layers: [
        { paths: [busybox], pathOptions: [], digest, diffId: digest, size: 0, mediaType: "application/vnd.oci.image.layer.v1.tar" },
        { paths: [share, app], pathOptions: [], digest, diffId: digest, size: 0, mediaType: "application/vnd.oci.image.layer.v1.tar" },
      ],
    });
  });

  it("accepts `config` and plain string paths, and an empty layer list", () => {
    const img = parseNix2Container({ version: 1, config: { Cmd: ["x"] }, layers: [{ paths: [busybox] }] });
    expect(img.config).toEqual({ Cmd: ["x"] });
    expect(img.layers[0]!.paths).toEqual([busybox]);
    expect(parseNix2Container({ version: 1, "image-config": {}, layers: [] }).layers).toEqual([]);
  });

  it("keeps per-path options and lists what the pusher must support", () => {
    const img = parseNix2Container({
      version: 1,
      "image-config": {},
      layers: [
        {
          paths: [
            { path: busybox, options: { rewrite: { regex: `^${busybox}`, repl: "" }, perms: [{ regex: ".*", mode: "0755", uid: 0, gid: 0 }] } },
            { path: share, options: {} },
          ],
        },
        {
          digest: `sha256:${"ab".repeat(32)}`,
          "layer-path": "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-blob.tar",
          mediatype: "application/vnd.oci.image.layer.v1.tar+gzip",
        },
        { paths: [{ path: app, options: { ignoreDestination: "^/etc" } }] },
      ],
    });
    expect(img.layers[0]!.pathOptions).toEqual([
      { path: busybox, options: { rewrite: { regex: `^${busybox}`, repl: "" }, perms: [{ regex: ".*", mode: "0755", uid: 0, gid: 0 }] } },
    ]);
    expect(img.layers[1]).toMatchObject({ paths: [], layerPath: "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-blob.tar" });
    expect(nix2ContainerFeatures(img)).toEqual(["ignoreDestination", "layer-path", "perms", "rewrite"]);
    expect(nix2ContainerFeatures(parseNix2Container(image))).toEqual([]);
  });

  it.each([
    ["not an object", [], /not a JSON object/],
    ["no version", { "image-config": {}, layers: [] }, /numeric `version`/],
    ["future version", { version: 2, "image-config": {}, layers: [] }, /version 2 is not supported/],
    ["layers not a list", { version: 1, "image-config": {}, layers: {} }, /not a list/],
    ["config not an object", { version: 1, "image-config": [], layers: [] }, /not an object/],
    ["path outside the store", { version: 1, "image-config": {}, layers: [{ paths: [{ path: "/etc/passwd" }] }] }, /not a path in \/nix\/store/],
    ["dot-dot path", { version: 1, "image-config": {}, layers: [{ paths: [`${busybox}/../../etc`] }] }, /not a path/],
    ["empty layer", { version: 1, "image-config": {}, layers: [{ digest }] }, /neither paths nor a layer-path/],
    ["layer-path without digest", { version: 1, "image-config": {}, layers: [{ "layer-path": `${busybox}/x.tar` }] }, /without a sha256 digest/],
    ["path without string", { version: 1, "image-config": {}, layers: [{ paths: [{ p: 1 }] }] }, /no string path/],
  ])("rejects %s", (_name, json, message) => {
    expect(() => parseNix2Container(json)).toThrow(ImageFormatError);
    expect(() => parseNix2Container(json)).toThrow(message);
  });

  it("honours another store directory", () => {
    const img = parseNix2Container(
      { version: 1, "image-config": {}, layers: [{ paths: ["/gnu/store/g1q9rqaxw9hdmq5iyz1y6a6zpfyrz9sf-x"] }] },
      { storeDir: "/gnu/store/" },
    );
    expect(img.layers[0]!.paths).toEqual(["/gnu/store/g1q9rqaxw9hdmq5iyz1y6a6zpfyrz9sf-x"]);
  });
});

describe("helpers", () => {
  it("recognises the shape", () => {
    expect(looksLikeNix2Container(image)).toBe(true);
    expect(looksLikeNix2Container({ version: 1, layers: [] })).toBe(false);
    expect(looksLikeNix2Container({ "image-config": {}, layers: [] })).toBe(false);
    expect(looksLikeNix2Container({ version: 1, config: {}, layers: [1] })).toBe(false);
  });
  it("checks store paths", () => {
    expect(isStorePathUnder(busybox, "/nix/store")).toBe(true);
    expect(isStorePathUnder(`${busybox}/bin/sh`, "/nix/store")).toBe(true);
    expect(isStorePathUnder("/nix/store/short-x", "/nix/store")).toBe(false);
    expect(isStorePathUnder("/nix/store", "/nix/store")).toBe(false);
    expect(isStorePathUnder(`${busybox}//x`, "/nix/store")).toBe(false);
  });
});

describe("readNix2Container", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "n2c-test-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  it("reads a file and names it in errors without echoing content", async () => {
    await writeFile(join(dir, "ok.json"), JSON.stringify(image));
    expect((await readNix2Container(join(dir, "ok.json"))).layers).toHaveLength(2);
    await writeFile(join(dir, "bad.json"), '{"secret": "hunter2"');
    const e = (await readNix2Container(join(dir, "bad.json")).catch((x: unknown) => x)) as Error;
    expect(e.message).toContain("bad.json: not valid JSON");
    expect(e.message).not.toContain("hunter2");
    await expect(readNix2Container(join(dir, "missing.json"))).rejects.toThrow(/cannot read/);
  });
});
