/**
 * The engine's Store behind a BaiChuan instance, for tests that check what reaches Redis or drive
 * the store directly. Product code never reaches past the engine (a dependency-cruiser rule).
 */
import type { BaiChuan } from "../../src/engine/baichuan.js";
import type { Store } from "../../src/store/store.js";

export function storeOf(bc: BaiChuan): Store {
  return (bc as unknown as { store: Store }).store;
}
