// What this browser offers: WebGPU adapter details (if any) and general device facts, for the
// backend note and the exported benchmark JSON.

let adapterInfo;

// Resolves to {vendor, architecture, device, description, features} or null without WebGPU.
export function detectWebGpu() {
  adapterInfo ??= (async () => {
    if (!('gpu' in navigator)) return null;
    try {
      const adapter = await navigator.gpu.requestAdapter();
      if (!adapter) return null;
      const i = adapter.info ?? {};
      return {
        vendor: i.vendor ?? '',
        architecture: i.architecture ?? '',
        device: i.device ?? '',
        description: i.description ?? '',
        features: [...adapter.features].sort(),
      };
    } catch {
      return null;
    }
  })();
  return adapterInfo;
}

export async function deviceInfo() {
  return {
    userAgent: navigator.userAgent,
    cpuThreads: navigator.hardwareConcurrency ?? null,
    memoryGiB: navigator.deviceMemory ?? null,
    webgpu: await detectWebGpu(),
    screen: `${screen.width}×${screen.height} @${window.devicePixelRatio}x`,
  };
}
