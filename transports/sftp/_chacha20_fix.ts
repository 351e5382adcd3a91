/**
 * Works around a memory leak of ssh2 under Deno. ssh2's
 * `chacha20-poly1305@openssh.com` code creates three `node:crypto` ChaCha20
 * ciphers per SSH packet and only ever calls `update()` on them once; Deno
 * frees a cipher only when `final()` is called, so each leaks about 270 bytes
 * (~100 MB per 4 GiB sent, without bound in a daemon). This wraps
 * `createCipheriv`/`createDecipheriv` for the `"chacha20"` algorithm only, so
 * `update()` also finalizes the cipher. It must run before ssh2 is loaded:
 * import ssh2 only through `./_ssh2.ts`.
 *
 * @module
 */
import crypto from "node:crypto";

let finalized = 0;

/** How many ChaCha20 ciphers the fix has finalized (0 means ssh2 bypassed it). */
export function chacha20CiphersFinalized(): number {
  return finalized;
}

type Factory = (...args: unknown[]) => { update(...args: unknown[]): unknown; final(): unknown };

function finalizingChaCha20(factory: Factory): Factory {
  return (...args: unknown[]) => {
    const cipher = factory(...args);
    if (args[0] !== "chacha20") return cipher;
    const update = cipher.update.bind(cipher);
    cipher.update = (...updateArgs: unknown[]) => {
      const output = update(...updateArgs);
      cipher.final(); // Frees Deno's cipher state; a stream cipher has no more output.
      finalized++;
      return output;
    };
    return cipher;
  };
}

const mutable = crypto as unknown as Record<"createCipheriv" | "createDecipheriv", Factory>;
mutable.createCipheriv = finalizingChaCha20(mutable.createCipheriv);
mutable.createDecipheriv = finalizingChaCha20(mutable.createDecipheriv);
