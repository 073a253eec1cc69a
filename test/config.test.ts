/**
 * Settings from the environment (config.ts): every boolean setting takes 1/0, true/false, yes/no
 * and on/off in any case, as the README says; anything else stops start-up with a message naming
 * the setting. (e2e.test.ts starts the real binary with bad values.)
 */
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../src/app/config.js";

const BOOLEANS = [
  ["BAICHUAN_WORKER", "worker", true],
  ["BAICHUAN_API", "api", true],
  ["BAICHUAN_DEBUG", "debug", false],
  ["BAICHUAN_METRICS_OPEN", "metricsOpen", false],
] as const;

const TRUE = ["1", "true", "yes", "on", "TRUE", "Yes", "ON", " yes "];
const FALSE = ["0", "false", "no", "off", "FALSE", "No", "OFF", " off "];

describe.each(BOOLEANS)("%s", (name, key, fallback) => {
  // The other of BAICHUAN_API and BAICHUAN_WORKER stays on, so that "off" is a valid configuration.
  it.each(TRUE)("%j is true", (value) => {
    expect(loadConfig({ [name]: value })[key]).toBe(true);
  });

  it.each(FALSE)("%j is false", (value) => {
    expect(loadConfig({ [name]: value })[key]).toBe(false);
  });

  it(`unset or empty is the default (${fallback})`, () => {
    expect(loadConfig({})[key]).toBe(fallback);
    expect(loadConfig({ [name]: "" })[key]).toBe(fallback);
  });

  it.each(["maybe", "2", "y", "enabled", "-1", "tru"])("%j stops start-up with a message naming the setting", (value) => {
    let err: unknown;
    try {
      loadConfig({ [name]: value });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).setting).toBe(name);
    expect((err as Error).message).toBe(`${name}: must be 1/0, true/false, yes/no or on/off, got ${JSON.stringify(value)}`);
  });
});

it("BAICHUAN_API=no with BAICHUAN_WORKER=off leaves nothing to do: refused", () => {
  expect(() => loadConfig({ BAICHUAN_API: "no", BAICHUAN_WORKER: "off" })).toThrow(ConfigError);
});
