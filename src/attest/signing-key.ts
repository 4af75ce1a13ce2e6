// Loads the image signing key: an ECDSA P-256 private key as PEM, either plain (PKCS#8
// `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`) or in cosign's encrypted format (`ENCRYPTED SIGSTORE
// PRIVATE KEY` / `ENCRYPTED COSIGN PRIVATE KEY`, what `cosign generate-key-pair` writes: a JSON
// document with an scrypt KDF and a NaCl secretbox around the PKCS#8 key), with its password.
// Errors never include key material or the password.
import { createPrivateKey, createPublicKey, scrypt, type KeyObject } from "node:crypto";

class SigningKeyError extends Error {
  override name = "SigningKeyError";
}

export interface SigningKey {
  privateKey: KeyObject;
  /** SPKI PEM of the public key (what `cosign verify --key` takes). */
  publicKeyPem: string;
}

const ENCRYPTED_TYPES = ["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"];

function pemBlock(text: string): { type: string; body: Buffer } | undefined {
  const m = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END \1-----/.exec(text);
  return m ? { type: m[1]!, body: Buffer.from(m[2]!.replace(/\s+/g, ""), "base64") } : undefined;
}

function scryptKey(password: Buffer, salt: Buffer, N: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => scrypt(password, salt, 32, { N, r, p, maxmem: 256 * 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key))));
}

interface EncryptedKey {
  kdf: { name: string; params: { N: number; r: number; p: number }; salt: string };
  cipher: { name: string; nonce: string };
  ciphertext: string;
}

async function decryptCosignKey(body: Buffer, password: string | undefined): Promise<Buffer> {
  if (password === undefined) throw new SigningKeyError("the signing key is encrypted (cosign format) and no password was given");
  let doc: EncryptedKey;
  try {
    doc = JSON.parse(body.toString("utf8")) as EncryptedKey;
  } catch {
    throw new SigningKeyError("the encrypted signing key is not cosign's JSON format");
  }
  const { N, r, p } = doc.kdf?.params ?? {};
  if (doc.kdf?.name !== "scrypt" || doc.cipher?.name !== "nacl/secretbox" || typeof doc.ciphertext !== "string") {
    throw new SigningKeyError("the encrypted signing key uses an unsupported KDF or cipher (expected scrypt + nacl/secretbox)");
  }
  // cosign's three strengths are 2^15..2^17; refuse anything that would take minutes or gigabytes.
  if (![32768, 65536, 131072].includes(N!) || r !== 8 || p !== 1) throw new SigningKeyError("the encrypted signing key has unsupported scrypt parameters");
  const key = await scryptKey(Buffer.from(password, "utf8"), Buffer.from(doc.kdf.salt, "base64"), N!, r!, p!);
  // tweetnacl is loaded only for an encrypted key, not by every step that imports this file.
  const { default: nacl } = await import("tweetnacl");
  const opened = nacl.secretbox.open(Buffer.from(doc.ciphertext, "base64"), Buffer.from(doc.cipher.nonce, "base64"), key);
  if (!opened) throw new SigningKeyError("cannot decrypt the signing key: wrong password");
  return Buffer.from(opened);
}

/** Parses a signing key PEM (and its password when encrypted); only ECDSA P-256 keys are accepted. */
export async function loadSigningKey(pem: string, password?: string): Promise<SigningKey> {
  const block = pemBlock(pem);
  if (!block) throw new SigningKeyError("the signing key is not PEM");
  let privateKey: KeyObject;
  try {
    if (ENCRYPTED_TYPES.includes(block.type)) {
      privateKey = createPrivateKey({ key: await decryptCosignKey(block.body, password), format: "der", type: "pkcs8" });
    } else if (block.type === "PRIVATE KEY") {
      privateKey = createPrivateKey({ key: block.body, format: "der", type: "pkcs8" });
    } else if (block.type === "EC PRIVATE KEY") {
      privateKey = createPrivateKey({ key: block.body, format: "der", type: "sec1" });
    } else {
      throw new SigningKeyError(`unsupported signing key PEM type ${JSON.stringify(block.type.slice(0, 40))} (expected an ECDSA P-256 key)`);
    }
  } catch (e) {
    if (e instanceof SigningKeyError) throw e;
    throw new SigningKeyError("the signing key PEM does not hold a readable private key");
  }
  if (privateKey.asymmetricKeyType !== "ec" || privateKey.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new SigningKeyError("the signing key must be ECDSA P-256 (cosign's default)");
  }
  const publicKeyPem = createPublicKey(privateKey).export({ format: "pem", type: "spki" }).toString();
  return { privateKey, publicKeyPem };
}
