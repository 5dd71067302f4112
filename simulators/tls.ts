import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import forge from "node-forge";

/**
 * A self-signed CA and one loopback server certificate signed by it, for the local
 * HTTPS fakes of Entra ID, Key Vault and the Defender API. Generated once into a folder
 * that git ignores; processes trust the CA through NODE_EXTRA_CA_CERTS.
 */
export interface TestCerts {
  caPath: string;
  caPem: string;
  key: string;
  cert: string;
}

const SERVER_NAMES = ["localhost", "*.localhost", "vault.localhost", "*.vault.localhost"];

export function ensureCerts(dir: string): TestCerts {
  const caPath = join(dir, "ca.pem");
  const keyPath = join(dir, "server-key.pem");
  const certPath = join(dir, "server-cert.pem");
  if (!existsSync(caPath) || !existsSync(keyPath) || !existsSync(certPath) || expired(certPath)) {
    mkdirSync(dir, { recursive: true });
    const generated = generate();
    writeFileSync(caPath, generated.caPem);
    writeFileSync(keyPath, generated.key, { mode: 0o600 });
    writeFileSync(certPath, generated.cert);
  }
  return {
    caPath,
    caPem: readFileSync(caPath, "utf8"),
    key: readFileSync(keyPath, "utf8"),
    cert: readFileSync(certPath, "utf8"),
  };
}

function expired(certPath: string): boolean {
  const cert = forge.pki.certificateFromPem(readFileSync(certPath, "utf8"));
  return cert.validity.notAfter.getTime() < Date.now() + 24 * 3600_000;
}

function generate(): { caPem: string; key: string; cert: string } {
  const now = new Date();
  const until = new Date(now.getTime() + 365 * 24 * 3600_000);
  const caKeys = forge.pki.rsa.generateKeyPair(2048);
  const ca = forge.pki.createCertificate();
  ca.publicKey = caKeys.publicKey;
  ca.serialNumber = randomSerial();
  ca.validity.notBefore = new Date(now.getTime() - 3600_000);
  ca.validity.notAfter = until;
  const caName = [{ name: "commonName", value: "MSSP collector local test CA" }];
  ca.setSubject(caName);
  ca.setIssuer(caName);
  ca.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  ca.sign(caKeys.privateKey, forge.md.sha256.create());

  const keys = forge.pki.rsa.generateKeyPair(2048);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = ca.validity.notBefore;
  cert.validity.notAfter = until;
  cert.setSubject([{ name: "commonName", value: "localhost" }]);
  cert.setIssuer(caName);
  cert.setExtensions([
    { name: "basicConstraints", cA: false },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: true },
    {
      name: "subjectAltName",
      altNames: [
        ...SERVER_NAMES.map((value) => ({ type: 2, value })),
        { type: 7, ip: "127.0.0.1" },
        { type: 7, ip: "::1" },
      ],
    },
  ]);
  cert.sign(caKeys.privateKey, forge.md.sha256.create());
  return {
    caPem: forge.pki.certificateToPem(ca),
    key: forge.pki.privateKeyToPem(keys.privateKey),
    cert: forge.pki.certificateToPem(cert),
  };
}

function randomSerial(): string {
  return `01${forge.util.bytesToHex(forge.random.getBytesSync(15))}`;
}
