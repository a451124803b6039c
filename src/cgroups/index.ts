export * from './paths';
export * from './parse';
export { readLimits, readStats, readStatsSync, type CgroupLimits, type CgroupStats } from './stats';
export { removeCgroup } from './remove';
