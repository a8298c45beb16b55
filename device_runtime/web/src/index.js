// mtl's device runtime for JavaScript: the same bundle, the same checks and the same adaptation as the Python
// runtime (device_runtime/), on onnxruntime-web in a page or onnxruntime-node under Node.
export { Adapter, softmaxAt, temperatureAt } from "./adapter.js";
export { Bundle, tensor } from "./bundle.js";
export { BundleError, ConfigError, DataError, MtlError } from "./errors.js";
export { parseManifest } from "./manifest.js";
export { normalize, preprocess, resize, toUint8 } from "./preprocess.js";
