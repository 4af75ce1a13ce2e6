{
  description = "nix-image-operator: builds Nix flakes into OCI images and rolls them out on Kubernetes";

  # No flake.lock is committed: it could not be created on the (offline) machine this flake was
  # written on. `nix flake lock` creates it on first use; commit it to pin nixpkgs.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system nixpkgs.legacyPackages.${system}; }) systems);

      packageJson = builtins.fromJSON (builtins.readFile ./package.json);
      version = packageJson.version;

      # Only what the build reads: a change to tests, docs or the chart does not rebuild it.
      src = builtins.path {
        name = "nix-image-operator-source";
        path = ./.;
        filter = path: type:
          let rel = builtins.substring (builtins.stringLength (toString ./.) + 1) (-1) (toString path);
          in builtins.elem rel [ "package.json" "package-lock.json" "tsconfig.json" "tsconfig.build.json" "src" "crds" ]
            || builtins.substring 0 4 rel == "src/"
            || builtins.substring 0 5 rel == "crds/";
      };

      # package-lock.json was written without `resolved` URLs (npm does that when it installs
      # from its cache), and Nix fetchers need a URL per package. Registry packages have a fixed
      # URL scheme, so add it here; the `integrity` hash in the lock file still pins every byte.
      # (Regenerating the lock file with resolved URLs makes this a no-op.)
      packageLock =
        let
          lock = builtins.fromJSON (builtins.readFile ./package-lock.json);
          lastOf = sep: s: let parts = builtins.filter builtins.isString (builtins.split sep s); in builtins.elemAt parts (builtins.length parts - 1);
          withUrl = path: entry:
            if path == "" || entry ? resolved || entry ? link || !(entry ? version) || builtins.match ".*node_modules/.*" path == null then entry
            else
              let name = lastOf "node_modules/" path;
              in entry // { resolved = "https://registry.npmjs.org/${name}/-/${lastOf "/" name}-${entry.version}.tgz"; };
        in lock // { packages = builtins.mapAttrs withUrl lock.packages; };

      operatorFor = pkgs: pkgs.buildNpmPackage {
        pname = "nix-image-operator";
        inherit version src;
        nodejs = pkgs.nodejs_24;
        # importNpmLock fetches each dependency by the lock file's integrity hash, so there is no
        # npmDepsHash to keep in sync with package-lock.json. (With the classic fetcher it would be
        # `npmDepsHash = "sha256-AAAA...";`: build once with lib.fakeHash and copy the hash from
        # the error message, after every change of the lock file.)
        npmDeps = pkgs.importNpmLock {
          package = packageJson;
          inherit packageLock;
        };
        npmConfigHook = pkgs.importNpmLock.npmConfigHook;
        # No dependency needs an install script.
        npmFlags = [ "--ignore-scripts" ];
        # `npm run build` (tsc) runs by default; dev dependencies are pruned before install.
        meta = {
          description = packageJson.description;
          license = pkgs.lib.licenses.asl20;
          mainProgram = "nix-image-operator";
          platforms = pkgs.lib.platforms.linux;
        };
      };
    in
    {
      packages = forAllSystems (system: pkgs:
        let operator = operatorFor pkgs;
        in {
          nix-image-operator = operator;
          default = operator;

          # The operator image: the controller, and the push step of builder Jobs (which runs
          # `nix-image-operator` from PATH). Same contract as the Dockerfile's image: uid 65532,
          # nothing written outside /tmp. `nix build .#image && ./result | docker load`, or let
          # the operator build and push it (examples/self-hosting.yaml).
          image = pkgs.dockerTools.streamLayeredImage {
            name = "nix-image-operator";
            tag = version;
            contents = [ operator pkgs.cacert ];
            extraCommands = "mkdir -m 1777 tmp";
            config = {
              Entrypoint = [ "/bin/nix-image-operator" ];
              Cmd = [ "--help" ];
              User = "65532:65532";
              Env = [
                "PATH=/bin"
                "HOME=/tmp"
                "TMPDIR=/tmp"
                "NODE_ENV=production"
                "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"
              ];
              ExposedPorts = { "8080/tcp" = { }; };
              Labels = {
                "org.opencontainers.image.title" = "nix-image-operator";
                "org.opencontainers.image.description" = packageJson.description;
                "org.opencontainers.image.licenses" = packageJson.license;
                "org.opencontainers.image.version" = version;
              };
            };
          };
        });

      devShells = forAllSystems (system: pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.nodejs_24
            pkgs.nix
            pkgs.skopeo
            pkgs.kubectl
            pkgs.kubernetes-helm
            pkgs.git
            pkgs.jq
            pkgs.openssl
          ];
          shellHook = ''
            echo "nix-image-operator dev shell: node $(node --version), npm ci && npm test"
          '';
        };
      });
    };
}
