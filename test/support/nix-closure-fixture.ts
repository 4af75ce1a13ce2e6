// Real Nix store paths for the OCI tests: a tiny closure built with the test bed's Nix (no
// nixpkgs; builders are /bin/sh with sandbox = false): a fake libc that everything references,
// three libraries (one with a path over 100 bytes, a symlink, a hardlink, a 2 MiB file), and an
// app whose content carries a marker, so a new marker gives a new app path with the same deps.
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parsePathInfoText, type ClosurePath } from "../../src/image/path-info.ts";
import { run } from "./process.ts";

export interface NixClosure {
  /** The app's store path (the image root). */
  app: string;
  closure: ClosurePath[];
}

// Written with @{ for Nix's ${ so that JavaScript does not interpolate it.
const fixtureNix = String.raw`{ marker }:
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/bin:/usr/bin";
  };
  libc = mk "oci-fixture-libc" ''
    mkdir -p $out/lib/locale
    echo "fake libc" > $out/lib/libc.so.6
    ln -s libc.so.6 $out/lib/libc.so
    chmod 0555 $out/lib/libc.so.6
  '';
  lib = n: extra: mk "oci-fixture-lib@{n}" (''
    mkdir -p $out/lib
    echo "lib @{n} uses @{libc}" > $out/lib/lib@{n}.so
  '' + extra);
  lib1 = lib "1" ''
    mkdir -p $out/share/a-directory-with-a-rather-long-name-to-push-paths-over-one-hundred-bytes
    echo long > $out/share/a-directory-with-a-rather-long-name-to-push-paths-over-one-hundred-bytes/file-with-a-long-name-as-well.txt
  '';
  lib2 = lib "2" ''
    echo shared > $out/lib/original
    ln $out/lib/original $out/lib/hardlink
    ln -s @{libc}/lib/libc.so.6 $out/lib/libc-link
  '';
  lib3 = lib "3" ''
    head -c 2097152 /dev/zero | tr '\0' 'z' > $out/lib/big.dat
  '';
  app = mk "oci-fixture-app" ''
    mkdir -p $out/bin
    printf '#!/bin/sh\necho @{marker}\n# @{lib1} @{lib2} @{lib3} @{libc}\n' > $out/bin/app
    chmod 0555 $out/bin/app
  '';
in app
`.replace(/@\{/g, "${");

let fixtureDir: string | undefined;

/** Builds the fixture closure for `marker` (cached by Nix: the same marker gives the same paths). */
export async function buildNixClosure(nixEnv: Record<string, string>, marker: string, gcRootDir: string): Promise<NixClosure> {
  if (!/^[A-Za-z0-9._-]+$/.test(marker)) throw new Error("marker must be a simple word");
  fixtureDir ??= mkdtempSync(join(gcRootDir, "nix-fixture-"));
  const file = join(fixtureDir, "fixture.nix");
  writeFileSync(file, fixtureNix);
  const env = { ...process.env, ...nixEnv };
  const outLink = join(gcRootDir, `result-${marker}`);
  const built = await run("nix", ["build", "--impure", "--json", "--out-link", outLink, "--expr", `(import ${file}) { marker = "${marker}"; }`], {
    env,
    timeoutMs: 120_000,
  });
  const app = (JSON.parse(built.stdout) as { outputs: { out: string } }[])[0]!.outputs.out;
  const info = await run("nix", ["path-info", "--json", "-r", app], { env });
  return { app, closure: parsePathInfoText(info.stdout) };
}
