export * from './paths';
export * from './parse';
export { readLimits, readStatsSync, type CgroupFileReader, type CgroupLimits, type CgroupStats, type StatsDetail } from './stats';
export { removeCgroup } from './remove';
export { OpenFiles } from './open_files';
