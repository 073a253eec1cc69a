/**
 * Sizes of the long soak and load tests. `npm test` runs them at a reduced size that still covers
 * every case; `npm run test:soak` (BAICHUAN_SOAK=1) runs them at full size. A size's own variable
 * (BAICHUAN_FUZZ_CASES, for example) wins over both.
 */

/** True under `npm run test:soak`: BAICHUAN_SOAK set to 1, true, yes or on. */
export const SOAK = /^(1|true|yes|on)$/i.test((process.env.BAICHUAN_SOAK ?? "").trim());

/**
 * The size to run: the variable `name` when it is set (a positive number), else `soak` under
 * BAICHUAN_SOAK, else `quick`.
 */
export function soakSize(name: string, sizes: { quick: number; soak: number }): number {
  const text = process.env[name];
  if (text === undefined || text.trim() === "") return SOAK ? sizes.soak : sizes.quick;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got ${JSON.stringify(text)}`);
  return value;
}
