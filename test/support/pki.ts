// Certificates and keys for the test bed, made with openssl (EC P-256: fast to generate) and
// node:crypto (service-account signing keys). Everything is written under one directory per run.
import { generateKeyPair } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { run } from "./process.ts";

export interface CertFiles {
  certFile: string;
  keyFile: string;
}

export interface LeafSpec {
  /** Base file name: <name>.crt and <name>.key. */
  name: string;
  commonName: string;
  organization?: string;
  /** e.g. ["IP:127.0.0.1", "DNS:localhost"]; server certificates need them. */
  altNames?: string[];
  usage: "server" | "client" | "both";
}

function opensslConfig(cn: string, o: string | undefined, ext: string[]): string {
  return ["[req]", "distinguished_name = dn", "prompt = no", "[dn]", ...(o ? [`O = ${o}`] : []), `CN = ${cn}`, "[ext]", ...ext, ""].join("\n");
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run("openssl", args);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n(openssl is needed for test-bed certificates: apt-get install openssl, or run scripts/setup.sh)`);
  }
}

const ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

/** A self-signed CA. */
export async function makeCa(dir: string, name: string, commonName: string): Promise<CertFiles> {
  const cfg = join(dir, `${name}.cnf`);
  await writeFile(
    cfg,
    opensslConfig(commonName, undefined, [
      "basicConstraints = critical,CA:TRUE",
      "keyUsage = critical,keyCertSign,cRLSign,digitalSignature",
      "subjectKeyIdentifier = hash",
    ]),
  );
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await openssl(["req", "-x509", "-config", cfg, "-extensions", "ext", ...ecKey, "-keyout", keyFile, "-out", certFile, "-days", "3650"]);
  return { certFile, keyFile };
}

/** A leaf certificate signed by `ca` (OpenSSL >= 3.0: `req -x509 -CA`). */
export async function makeLeaf(dir: string, ca: CertFiles, spec: LeafSpec): Promise<CertFiles> {
  const eku = spec.usage === "server" ? "serverAuth" : spec.usage === "client" ? "clientAuth" : "serverAuth,clientAuth";
  const cfg = join(dir, `${spec.name}.cnf`);
  await writeFile(
    cfg,
    opensslConfig(spec.commonName, spec.organization, [
      "basicConstraints = critical,CA:FALSE",
      "keyUsage = critical,digitalSignature,keyEncipherment",
      `extendedKeyUsage = ${eku}`,
      ...(spec.altNames?.length ? [`subjectAltName = ${spec.altNames.join(",")}`] : []),
      "subjectKeyIdentifier = hash",
      "authorityKeyIdentifier = keyid",
    ]),
  );
  const certFile = join(dir, `${spec.name}.crt`);
  const keyFile = join(dir, `${spec.name}.key`);
  await openssl([
    "req",
    "-x509",
    "-config",
    cfg,
    "-extensions",
    "ext",
    ...ecKey,
    "-CA",
    ca.certFile,
    "-CAkey",
    ca.keyFile,
    "-keyout",
    keyFile,
    "-out",
    certFile,
    "-days",
    "3650",
  ]);
  return { certFile, keyFile };
}

export interface KeyPairFiles {
  privateKeyFile: string;
  publicKeyFile: string;
}

/** An RSA key pair (PKCS#8 / SPKI PEM), e.g. for service-account token signing. */
export async function makeRsaKeyPair(dir: string, name: string): Promise<KeyPairFiles> {
  const { privateKey, publicKey } = await promisify(generateKeyPair)("rsa", {
    modulusLength: 2048,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });
  const privateKeyFile = join(dir, `${name}.key`);
  const publicKeyFile = join(dir, `${name}.pub`);
  await Promise.all([writeFile(privateKeyFile, privateKey, { mode: 0o600 }), writeFile(publicKeyFile, publicKey)]);
  return { privateKeyFile, publicKeyFile };
}
