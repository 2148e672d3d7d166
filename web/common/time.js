// Waiting in the pages' own loops (polls, recordings, measurements).
export const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
