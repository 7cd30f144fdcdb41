export * from "./types.js";
export * from "./results.js";
export * from "./clock.js";
export * from "./working-set.js";
export * from "./create-accounts.js";
export * from "./create-transfers.js";
export * from "./verify.js";
export * from "./validate.js";
