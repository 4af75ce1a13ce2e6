// A streamLayeredImage-shaped flake whose script, when it runs, prints a one-layer docker-archive
// holding /report: the uid/gid it ran as, for each probed path whether it could read it, then its
// environment. `failWith` replaces the script body (a script that fails). Needs only /bin/sh and
// /bin/busybox (the test bed's host and the e2e builder image have both; sandbox off).
export function streamProbeFlake(probePaths: readonly string[], failWith?: string): Record<string, string> {
  const probes = probePaths.map((p) => `if $bb test -r ${p}; then echo ${p}=readable; else echo ${p}=unreadable; fi >> root/report`);
  const script = (
    failWith !== undefined
      ? [failWith]
      : [
          "set -e",
          "bb=$busybox/bin/busybox",
          "t=$($bb mktemp -d)",
          "cd $t",
          "$bb mkdir root",
          'echo "uid=$($bb id -u) gid=$($bb id -g)" > root/report',
          ...probes,
          "$bb env >> root/report",
          "$bb tar -cf layer.tar -C root .",
          "d=$($bb sha256sum layer.tar | $bb cut -d' ' -f1)",
          "$bb mkdir $d && $bb mv layer.tar $d/layer.tar",
          '$bb printf \'{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}\' $d > config.json',
          "c=$($bb sha256sum config.json | $bb cut -d' ' -f1)",
          "$bb mv config.json $c.json",
          '$bb printf \'[{"Config":"%s.json","RepoTags":[],"Layers":["%s/layer.tar"]}]\' $c $d > manifest.json',
          "$bb tar -cf - $d/layer.tar $c.json manifest.json",
        ]
  ).join("\n");
  const flake = `{
  outputs = { self }: let
    system = "x86_64-linux";
    busybox = derivation {
      name = "busybox-static"; inherit system; builder = "/bin/sh";
      args = [ "-c" "/bin/busybox mkdir -p $out/bin && /bin/busybox cp /bin/busybox $out/bin/busybox && /bin/busybox ln -s busybox $out/bin/sh" ];
    };
    stream = derivation {
      name = "stream"; inherit system busybox; builder = "/bin/sh";
      body = ${JSON.stringify(script)};
      passAsFile = [ "body" ];
      args = [ "-c" ''{ echo "#!$busybox/bin/sh"; echo "busybox=$busybox"; /bin/busybox cat $bodyPath; } > $out && /bin/busybox chmod 555 $out'' ];
    };
    wrapper = derivation {
      name = "stream-probe"; inherit system busybox stream; builder = "/bin/sh";
      args = [ "-c" ''{ echo "#!$busybox/bin/sh"; echo "exec $stream"; } > $out && /bin/busybox chmod 555 $out'' ];
    };
  in { packages.\${system}.default = wrapper; };
}
`;
  return { "flake.nix": flake, "flake.lock": JSON.stringify({ nodes: { root: {} }, root: "root", version: 7 }) };
}
