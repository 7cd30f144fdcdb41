export { startPlatform, SERVICE_NAMES, DEFAULT_PORTS, type Platform, type PlatformClients, type PlatformOptions, type ServiceName } from "./platform.js";
export { seedDemo, DEMO, type DemoCustomer } from "./demo.js";
export { startStack } from "./stack.js";
export { audit, auditWhenSettled } from "./auditor.js";
