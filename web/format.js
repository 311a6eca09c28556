// How the model picker and the Compare models tab write sizes: parameters, bytes, FLOPs.

export const fmtParams = (n) => `${(n / 1e6).toFixed(2)}M`;
export const fmtBytes = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : `${(n / 1e3).toFixed(0)} KB`);
export const fmtFlops = (n) => `${(n / 1e6).toFixed(2)} MFLOPs`;
