import assert from "node:assert/strict";
import { ConfigError } from "./errors.ts";
import { type IniDocument, type IniSection, parseIni } from "./ini.ts";

/** The section named `name`, which the test expects to exist. */
function section(document: IniDocument, name: string): IniSection {
  const found = document.sections.find((section) => section.name === name);
  assert.ok(found, `section [${name}] exists`);
  return found;
}

/** Every interpolated value of a section, by lowercased key. */
function values(document: IniDocument, name: string): Record<string, string> {
  const result: Record<string, string> = {};
  const found = section(document, name);
  for (const entry of found.entries) result[entry.key] = found.get(entry.key)!;
  return result;
}

/** Asserts that `fn` throws a ConfigError located as given whose message matches `pattern`. */
function assertIniError(
  fn: () => unknown,
  where: { line: number; section?: string; key?: string },
  pattern: RegExp,
): ConfigError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${caught}`);
  assert.equal(caught.file, "test.ini");
  assert.equal(caught.line, where.line);
  assert.equal(caught.section, where.section);
  assert.equal(caught.key, where.key);
  let prefix = `test.ini:${where.line}: `;
  if (where.section !== undefined) prefix += `[${where.section}] `;
  if (where.key !== undefined) prefix += `${where.key}: `;
  assert.ok(caught.message.startsWith(prefix), `"${caught.message}" starts with "${prefix}"`);
  assert.match(caught.message, pattern);
  return caught;
}

Deno.test("parseIni() splits at the first of '=' and ':' and lowercases keys", () => {
  const document = parseIni(
    [
      "[s]",
      "Plain = value",
      "colon: value",
      "URL = http://example.com:80/a=b",
      "Ratio: 1=2",
      "Spaced Key   =   spaced value  ",
      "empty =",
      "MiXeD = Case Kept",
    ].join("\n"),
    "test.ini",
  );
  assert.deepEqual(values(document, "s"), {
    plain: "value",
    colon: "value",
    url: "http://example.com:80/a=b",
    ratio: "1=2",
    "spaced key": "spaced value",
    empty: "",
    mixed: "Case Kept",
  });
  const entry = section(document, "s").entry("MIXED");
  assert.equal(entry?.name, "MiXeD");
  assert.equal(entry?.line, 8);
});

Deno.test("parseIni() keeps values verbatim as strings", () => {
  const document = parseIni("[s]\nport = 022\nflag = yes\nlist = a, b ,c\n", "test.ini");
  assert.deepEqual(values(document, "s"), { port: "022", flag: "yes", list: "a, b ,c" });
});

Deno.test("parseIni() joins indented continuation lines as configparser does", () => {
  // Expected values are what Python 3's configparser returns for this text.
  const text = [
    "[a]",
    "key =",
    "  one",
    "",
    "  two",
    "   # a comment inside the value",
    "  three",
    "",
    "",
    "next = x",
    "\tcontinued with a tab",
    "last = y",
    "",
  ].join("\n");
  const document = parseIni(text, "test.ini");
  assert.deepEqual(values(document, "a"), {
    key: "\none\n\ntwo\nthree",
    next: "x\ncontinued with a tab",
    last: "y",
  });
  assert.equal(section(document, "a").entry("next")?.line, 10);
});

Deno.test("parseIni() continues a value only when indented deeper than its key", () => {
  const document = parseIni("[a]\n  first = 1\n  second = 2\n    more\n", "test.ini");
  assert.deepEqual(values(document, "a"), { first: "1", second: "2\nmore" });
});

Deno.test("parseIni() gives [DEFAULT] keys to every section unless overridden", () => {
  const text = [
    "[DEFAULT]",
    "Port = 2222",
    "user = shared",
    "[Vessel one]",
    "port = 22",
    "[DEFAULT]",
    "timeout = 5",
    "[Vessel two]",
  ].join("\n");
  const document = parseIni(text, "test.ini");
  assert.deepEqual(document.sections.map((section) => section.name), ["Vessel one", "Vessel two"]);
  assert.deepEqual(values(document, "Vessel one"), { port: "22", user: "shared", timeout: "5" });
  assert.deepEqual(values(document, "Vessel two"), { port: "2222", user: "shared", timeout: "5" });
  const one = section(document, "Vessel one");
  assert.equal(one.entry("port")?.inherited, false);
  assert.equal(one.entry("user")?.inherited, true);
  assert.equal(one.entry("user")?.line, 3);
  assert.deepEqual(document.defaults.map((entry) => [entry.name, entry.line]), [
    ["Port", 2],
    ["user", 3],
    ["timeout", 7],
  ]);
});

Deno.test("parseIni() reads '%%' as '%' and interpolates %(name)s like BasicInterpolation", () => {
  const text = [
    "[DEFAULT]",
    "base = /srv",
    "inbox = %(base)s/%(name)s",
    "[Directory a]",
    "name = alpha",
    "percent = 100%%",
    "Location = %(INBOX)s/in",
    "[Directory b]",
    "plain = no references",
  ].join("\n");
  const document = parseIni(text, "test.ini");
  const a = section(document, "Directory a");
  assert.equal(a.get("percent"), "100%");
  assert.equal(a.get("location"), "/srv/alpha/in");
  assert.equal(a.entry("percent")?.raw, "100%%");
  // A [DEFAULT] value that refers to a key some sections lack only fails when read there.
  const b = section(document, "Directory b");
  assert.equal(b.get("plain"), "no references");
  assertIniError(
    () => b.get("inbox"),
    { line: 3, section: "Directory b", key: "inbox" },
    /refers to "%\(name\)s", but no key "name" is set .*\(inherited from \[DEFAULT\]\)$/,
  );
});

Deno.test("parseIni() rejects a lone '%' and reference loops when the value is read", () => {
  const document = parseIni(
    "[s]\nrate = 5% off\nbad = %(oops\nloop = %(loop)s\n",
    "test.ini",
  );
  const s = section(document, "s");
  assertIniError(() => s.get("rate"), { line: 2, section: "s", key: "rate" }, /write "%%"/);
  assertIniError(() => s.get("bad"), { line: 3, section: "s", key: "bad" }, /bad "%\(name\)s"/);
  assertIniError(() => s.get("loop"), { line: 4, section: "s", key: "loop" }, /deeper than 10/);
});

Deno.test("parseIni() quotes nothing from a secret key's value in interpolation errors", () => {
  const document = parseIni("[s]\nPassword = x%(hunter2)s\n", "test.ini", {
    secretKeys: ["password"],
  });
  const error = assertIniError(
    () => section(document, "s").get("password"),
    { line: 2, section: "s", key: "Password" },
    /not set/,
  );
  assert.doesNotMatch(error.message, /hunter2/);
});

Deno.test("parseIni() quotes nothing from a key a secret's value refers to", () => {
  // The key the password is built from is as secret as the password: its broken reference
  // was quoted in the error about the Password.
  const document = parseIni(
    "[DEFAULT]\npw = x%(hunter2)s\n[s]\nPassword = %(pw)s\nPath = %(pw)s\n",
    "test.ini",
    { secretKeys: ["password"] },
  );
  const error = assertIniError(
    () => section(document, "s").get("password"),
    { line: 4, section: "s", key: "Password" },
    /is set in this section or \[DEFAULT\]|not set/,
  );
  assert.doesNotMatch(error.message, /hunter2/);
  // A key that is not secret still names what it refers to.
  assertIniError(
    () => section(document, "s").get("path"),
    { line: 5, section: "s", key: "Path" },
    /refers to "%\(hunter2\)s", but no key "hunter2" is set/,
  );
});

Deno.test("parseIni() rejects duplicate sections and duplicate keys in any case", () => {
  assertIniError(
    () => parseIni("[a]\nx = 1\n\n[a]\n", "test.ini"),
    { line: 4, section: "a" },
    /duplicate section \(first defined on line 1\)/,
  );
  assertIniError(
    () => parseIni("[a]\nPort = 1\nport = 2\n", "test.ini"),
    { line: 3, section: "a", key: "port" },
    /duplicate key \(first set on line 2\)/,
  );
  assertIniError(
    () => parseIni("[DEFAULT]\nx = 1\n[a]\n[DEFAULT]\nX = 2\n", "test.ini"),
    { line: 5, section: "DEFAULT", key: "X" },
    /duplicate key/,
  );
  // Sections differ by case, as in configparser; keys in different sections do not clash.
  const document = parseIni("[a]\nx = 1\n[A]\nx = 2\n", "test.ini");
  assert.deepEqual(document.sections.map((section) => section.get("x")), ["1", "2"]);
});

Deno.test("parseIni() accepts section names with spaces and dots", () => {
  const document = parseIni(
    "[Vessel files.example.com]\nAddress = files.example.com\n[Directory my outbox]\n",
    "test.ini",
  );
  assert.deepEqual(document.sections.map((section) => [section.name, section.line]), [
    ["Vessel files.example.com", 1],
    ["Directory my outbox", 3],
  ]);
  assert.equal(section(document, "Vessel files.example.com").get("address"), "files.example.com");
});

Deno.test("parseIni() skips full-line comments, also indented and inside values", () => {
  const text = [
    "# leading comment",
    "; another",
    "[s]",
    "  # indented comment, not a continuation",
    "a = 1",
    "    ; comment between value lines",
    "    2",
    "b = 3",
  ].join("\n");
  assert.deepEqual(values(parseIni(text, "test.ini"), "s"), { a: "1\n2", b: "3" });
});

Deno.test("parseIni() strips inline comments after whitespace and keeps other '#' and ';'", () => {
  const text = [
    "[s]  # a comment after a header",
    "port = 22   # ssh",
    "tab = 1\t; tab then semicolon",
    "password = pa#ss;word",
    "host = host#1",
    "leading = #starts with a hash",
    "semi = ;starts with a semicolon",
    "multi = first # note",
    "  second ; note",
    "url = http://example.com/#frag",
  ].join("\n");
  const document = parseIni(text, "test.ini");
  assert.deepEqual(values(document, "s"), {
    port: "22",
    tab: "1",
    password: "pa#ss;word",
    host: "host#1",
    leading: "#starts with a hash",
    semi: ";starts with a semicolon",
    multi: "first\nsecond",
    url: "http://example.com/#frag",
  });
  const s = section(document, "s");
  assert.equal(s.entry("port")?.strippedComment, true);
  assert.equal(s.entry("multi")?.strippedComment, true);
  assert.equal(s.entry("password")?.strippedComment, false);
  assert.equal(s.entry("leading")?.strippedComment, false);
});

Deno.test("parseIni() reads CRLF line endings and a byte order mark", () => {
  const document = parseIni("\uFEFF[s]\r\na = 1\r\n  2\r\nb = 3\r\n", "test.ini");
  assert.deepEqual(values(document, "s"), { a: "1\n2", b: "3" });
  assert.equal(section(document, "s").entry("b")?.line, 4);
});

Deno.test("parseIni() reports malformed lines with file and line, never their text", () => {
  const keyFirst = assertIniError(
    () => parseIni("# comment\n\nsecretword = x\n[s]\n", "test.ini"),
    { line: 3 },
    /outside any section/,
  );
  assert.doesNotMatch(keyFirst.message, /secretword/);
  const noDelimiter = assertIniError(
    () => parseIni("[s]\nPassword hunter2\n", "test.ini"),
    { line: 2, section: "s" },
    /expected "key = value"/,
  );
  assert.doesNotMatch(noDelimiter.message, /hunter2/);
  assertIniError(
    () => parseIni("[s]\n = value\n", "test.ini"),
    { line: 2, section: "s" },
    /key name is missing before "="/,
  );
  assertIniError(
    () => parseIni("[s]\nx = 1\n[t] trailing\n", "test.ini"),
    { line: 3 },
    /section header must be the whole line/,
  );
  assertIniError(() => parseIni("[ ]\n", "test.ini"), { line: 1 }, /empty section name/);
});

Deno.test("parseIni() reads an empty file as no sections", () => {
  const document = parseIni("", "test.ini");
  assert.deepEqual(document.sections, []);
  assert.deepEqual(document.defaults, []);
});
