import { describe, expect, it } from "vitest";
import { imageTags, immutableTag, TagError } from "../../src/builder/image-tags.ts";
import { isValidTag } from "../../src/oci/image-reference.ts";

const out = "/nix/store/wkjazii3rjn901h0xl6rdlwhiblf3pc2-hello-1.0";
const rev = "3c5716757368b589fa04d2ffb66ac586ef5cf676";

describe("immutable tags", () => {
  it("come from the commit and the out path hash", () => {
    expect(immutableTag({ rev, narHash: "sha256-x" }, out)).toBe("rev-3c5716757368-wkjazii3");
  });

  it("come from the source NAR hash when there is no commit (tarballs)", () => {
    const a = immutableTag({ narHash: "sha256-pQtc3b6Uzagku7kRa1g1FOBjF4phPHC97hHwm8nYaHQ=" }, out);
    const b = immutableTag({ narHash: "sha256-AAAc3b6Uzagku7kRa1g1FOBjF4phPHC97hHwm8nYaHQ=" }, out);
    expect(a).toMatch(/^nar-[0-9a-f]{12}-wkjazii3$/);
    expect(a).not.toBe(b);
    expect(isValidTag(a)).toBe(true);
  });

  it("differ for different outputs of one revision", () => {
    expect(immutableTag({ rev, narHash: "x" }, "/nix/store/g1q9rqaxw9hdmq5iyz1y6a6zpfyrz9sf-busybox-static")).toBe("rev-3c5716757368-g1q9rqax");
  });

  it("go first, before the requested tags (deduplicated, validated)", () => {
    expect(imageTags({ rev, narHash: "x" }, out, ["latest", "v1", "latest"])).toEqual(["rev-3c5716757368-wkjazii3", "latest", "v1"]);
    expect(() => imageTags({ rev, narHash: "x" }, out, ["-bad"])).toThrow(TagError);
    expect(() => imageTags({ rev, narHash: "x" }, out, ["a".repeat(129)])).toThrow(/invalid tag/);
    expect(() => immutableTag({ rev, narHash: "x" }, "/tmp/not-a-store-path")).toThrow(TagError);
  });
});
