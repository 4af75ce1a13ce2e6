// Which NixImages may push with a Secret (pure): the Secret opts in by naming them in its
// annotation `niximage.io/allowed-images` ("web,api", or "*" for every NixImage of its
// namespace). Without it, no NixImage may use the Secret: a tenant who can write a NixImage
// must not be able to push with any dockerconfigjson that happens to live in the namespace.

const allowedImagesAnnotation = "niximage.io/allowed-images";

export type SecretConsent = { allowed: true } | { allowed: false; message: string };

export function pushSecretConsent(secretName: string, annotations: Record<string, string> | undefined, imageName: string): SecretConsent {
  const raw = annotations?.[allowedImagesAnnotation];
  const names = (raw ?? "")
    .split(",")
    .map((n) => n.trim())
    .filter(Boolean);
  if (names.includes("*") || names.includes(imageName)) return { allowed: true };
  const fix = `kubectl annotate secret ${secretName} ${allowedImagesAnnotation}=${[...names, imageName].join(",")} --overwrite`;
  return {
    allowed: false,
    message:
      raw === undefined
        ? `Secret ${secretName} (spec.image.pushSecretRef) has not opted in to NixImages: its owner lets this one push with it by \`${fix}\``
        : `Secret ${secretName} (spec.image.pushSecretRef) allows only ${names.length ? names.join(", ") : "no NixImage"} (annotation ${allowedImagesAnnotation}), not ${imageName}: \`${fix}\``,
  };
}
