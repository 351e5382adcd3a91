import assert from "node:assert/strict";
import { shellCommand, shellQuote } from "./shell_quote.ts";

const HOSTILE = [
  "plain",
  "",
  "with space",
  "two  spaces and\ttab",
  "it's",
  `"double"`,
  "'",
  "''",
  "$HOME",
  "${PATH}",
  "$(touch /tmp/pwned)",
  "`id`",
  "line\nbreak",
  "\n",
  "trailing newline\n",
  "-rf",
  "--",
  "-n",
  "a;b&&c||d|e>f<g",
  "*",
  "?",
  "[a-z]",
  "~",
  "~root",
  "x=1",
  "#comment",
  "back\\slash",
  "Überweisung €100 日本語 🚢",
  "\x01\x7f control",
  "!history",
  "{a,b}",
];

/** Runs `shell` on a script that prints each argument NUL-terminated. */
async function echoThrough(shell: string, values: string[]): Promise<string[]> {
  const script = `printf '%s\\0' ${values.map(shellQuote).join(" ")}`;
  const output = await new Deno.Command(shell, { args: ["-c", script], stdout: "piped" }).output();
  assert.equal(output.code, 0, `${shell} failed on ${script}`);
  const text = new TextDecoder().decode(output.stdout);
  return text.split("\0").slice(0, -1);
}

for (const shell of ["sh", "bash"]) {
  Deno.test(`shellQuote() words read back unchanged by ${shell}`, async () => {
    assert.deepEqual(await echoThrough(shell, HOSTILE), HOSTILE);
  });
}

Deno.test("shellQuote() leaves safe words bare and quotes the rest", () => {
  assert.equal(shellQuote("/srv/in-box/a_b.1,2:3@4%5+6"), "/srv/in-box/a_b.1,2:3@4%5+6");
  assert.equal(shellQuote(""), "''");
  assert.equal(shellQuote("a b"), "'a b'");
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
  assert.equal(shellQuote("x=1"), "'x=1'");
  assert.equal(shellQuote("~"), "'~'");
});

Deno.test("shellQuote() refuses a NUL byte with a TypeError naming the value", () => {
  assert.throws(() => shellQuote("a\0b"), (error: unknown) => {
    assert.ok(error instanceof TypeError);
    assert.match(error.message, /Cannot quote "a\\u0000b" for a shell: it contains a NUL byte/);
    return true;
  });
});

Deno.test("shellCommand() runs a hostile file name as data, never as a command", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const names = ["$(touch pwned)", "`touch pwned2`", "a;touch pwned3", "-n", "new\nline", "x'y"];
    for (const name of names) await Deno.writeTextFile(`${dir}/${name}`, name);
    const paths = names.map((name) => `${dir}/${name}`);
    const output = await new Deno.Command("sh", {
      args: ["-c", shellCommand(["cat", "--", ...paths])],
      cwd: dir,
      stdout: "piped",
    }).output();
    assert.equal(output.code, 0);
    assert.equal(new TextDecoder().decode(output.stdout), names.join(""));
    const entries = [...Deno.readDirSync(dir)].map((entry) => entry.name).sort();
    assert.deepEqual(entries, [...names].sort());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
