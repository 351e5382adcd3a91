import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  appendKnownHost,
  checkHostKey,
  fingerprint,
  hostLookupName,
  keyTypeOf,
  knownKeyTypes,
  matchesHost,
  parseKnownHosts,
} from "./known_hosts.ts";

const KEY_A = "AAAAC3NzaC1lZDI1NTE5AAAAIOb3UjRgmYl0pM8dOhp1L6cUuSWNLN4y8I7EQbIm29LX";
const KEY_B = "AAAAC3NzaC1lZDI1NTE5AAAAIAm3p0Qv4b3yC8PlPq1jGv2Xe7qV3YtDYf6Xr0KxXZ4p";

Deno.test("parseKnownHosts() reads entries, markers and line numbers, skipping junk", () => {
  const text = [
    "# comment",
    "",
    `web1,10.0.0.1 ssh-ed25519 ${KEY_A} comment here`,
    `@revoked * ssh-ed25519 ${KEY_B}`,
    `@cert-authority *.example.com ssh-ed25519 ${KEY_B}`,
    "@unknown host ssh-ed25519 AAAA",
    "truncated-line ssh-ed25519",
    `  [web2]:2222 ssh-rsa ${KEY_A}`,
  ].join("\n");
  assert.deepEqual(parseKnownHosts(text), [
    { line: 3, marker: undefined, hosts: "web1,10.0.0.1", keyType: "ssh-ed25519", key: KEY_A },
    { line: 4, marker: "@revoked", hosts: "*", keyType: "ssh-ed25519", key: KEY_B },
    {
      line: 5,
      marker: "@cert-authority",
      hosts: "*.example.com",
      keyType: "ssh-ed25519",
      key: KEY_B,
    },
    { line: 8, marker: undefined, hosts: "[web2]:2222", keyType: "ssh-rsa", key: KEY_A },
  ]);
});

Deno.test("matchesHost() follows OpenSSH: [host]:port, lists, wildcards, negation, case", () => {
  assert.equal(hostLookupName("Web1", 22), "web1");
  assert.equal(hostLookupName("web1", 2222), "[web1]:2222");
  assert.ok(matchesHost("web1", "web1", 22));
  assert.ok(matchesHost("WEB1", "web1", 22));
  assert.ok(!matchesHost("web1", "web1", 2222), "a port other than 22 needs [host]:port");
  assert.ok(matchesHost("[web1]:2222", "web1", 2222));
  assert.ok(!matchesHost("[web1]:2222", "web1", 22));
  assert.ok(matchesHost("a,b,web1", "web1", 22));
  assert.ok(matchesHost("*.example.com", "files.example.com", 22));
  assert.ok(!matchesHost("*.example.com", "example.com", 22));
  assert.ok(matchesHost("web?", "web7", 22));
  assert.ok(!matchesHost("web?", "web17", 22));
  assert.ok(!matchesHost("*.example.com,!bad.example.com", "bad.example.com", 22));
  assert.ok(matchesHost("*.example.com,!bad.example.com", "ok.example.com", 22));
  assert.ok(matchesHost("[127.0.0.1]:*", "127.0.0.1", 4022));
});

Deno.test("matchesHost() matches hashed entries written by ssh-keygen -H", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/known_hosts`;
    await Deno.writeTextFile(
      file,
      `web1 ssh-ed25519 ${KEY_A}\n[127.0.0.1]:2222 ssh-ed25519 ${KEY_B}\n`,
    );
    const output = await new Deno.Command("ssh-keygen", { args: ["-H", "-f", file] }).output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    const entries = parseKnownHosts(await Deno.readTextFile(file));
    assert.equal(entries.length, 2);
    assert.ok(entries.every((entry) => entry.hosts.startsWith("|1|")));
    assert.ok(matchesHost(entries[0].hosts, "web1", 22));
    assert.ok(!matchesHost(entries[0].hosts, "web2", 22));
    assert.ok(matchesHost(entries[1].hosts, "127.0.0.1", 2222));
    assert.ok(!matchesHost(entries[1].hosts, "127.0.0.1", 22));
    assert.deepEqual(checkHostKey(entries, "127.0.0.1", 2222, "ssh-ed25519", KEY_B), {
      status: "known",
      line: 2,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkHostKey() tells known, unknown, changed and revoked apart", () => {
  const entries = parseKnownHosts([
    `web1 ssh-ed25519 ${KEY_A}`,
    `web2 ssh-rsa ${KEY_A}`,
    `@revoked web3 ssh-ed25519 ${KEY_B}`,
    `web3 ssh-ed25519 ${KEY_B}`,
    `@cert-authority web4 ssh-ed25519 ${KEY_A}`,
  ].join("\n"));
  assert.deepEqual(checkHostKey(entries, "web1", 22, "ssh-ed25519", KEY_A), {
    status: "known",
    line: 1,
  });
  assert.deepEqual(checkHostKey(entries, "web1", 22, "ssh-ed25519", KEY_B), {
    status: "changed",
    line: 1,
  });
  assert.deepEqual(checkHostKey(entries, "web2", 22, "ssh-ed25519", KEY_B), {
    status: "unknown",
    otherTypes: ["ssh-rsa"],
  });
  assert.deepEqual(checkHostKey(entries, "web3", 22, "ssh-ed25519", KEY_B), {
    status: "revoked",
    line: 3,
  });
  assert.deepEqual(checkHostKey(entries, "web4", 22, "ssh-ed25519", KEY_A), {
    status: "unknown",
    otherTypes: [],
  });
  assert.deepEqual(knownKeyTypes(entries, "web2", 22), ["ssh-rsa"]);
});

Deno.test("fingerprint() and keyTypeOf() agree with ssh-keygen", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const key = `${dir}/key`;
    await new Deno.Command("ssh-keygen", {
      args: ["-q", "-t", "ed25519", "-N", "", "-f", key],
    }).output();
    const [type, base64] = (await Deno.readTextFile(`${key}.pub`)).split(" ");
    const output = await new Deno.Command("ssh-keygen", { args: ["-l", "-f", `${key}.pub`] })
      .output();
    const expected = new TextDecoder().decode(output.stdout).split(" ")[1];
    const blob = Buffer.from(base64, "base64");
    assert.equal(keyTypeOf(blob), type);
    assert.equal(fingerprint(blob), expected);
    assert.throws(() => keyTypeOf(new Uint8Array([0, 0, 0, 9, 1])), TypeError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("appendKnownHost() creates the file 0600, appends once, and ssh-keygen finds it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/new/known_hosts`;
    await Promise.all([
      appendKnownHost(file, "127.0.0.1", 2222, "ssh-ed25519", KEY_A),
      appendKnownHost(file, "127.0.0.1", 2222, "ssh-ed25519", KEY_A),
    ]);
    await appendKnownHost(file, "web1", 22, "ssh-ed25519", KEY_B);
    assert.equal(
      await Deno.readTextFile(file),
      `[127.0.0.1]:2222 ssh-ed25519 ${KEY_A}\nweb1 ssh-ed25519 ${KEY_B}\n`,
    );
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    const output = await new Deno.Command("ssh-keygen", {
      args: ["-F", "[127.0.0.1]:2222", "-f", file],
    }).output();
    assert.equal(output.code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
