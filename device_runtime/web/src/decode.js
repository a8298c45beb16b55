// An image file (Blob) → its pixels as the Python runtime sees them after Pillow's decode: RGBA bytes, no colour
// management (colorSpaceConversion "none") and no premultiplied alpha, so an opaque PNG gives exactly Pillow's
// values. (A JPEG decoder may differ from Pillow's libjpeg by a level here and there; a semi-transparent pixel
// passes through a canvas, which stores premultiplied alpha.)
export async function decodeImage(blob, name = blob.name || "image") {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (error) {
    throw new Error(`cannot read image ${name}: ${error.message}`);
  }
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { colorSpace: "srgb", willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const { data } = context.getImageData(0, 0, bitmap.width, bitmap.height, { colorSpace: "srgb" });
  const pixels = { width: bitmap.width, height: bitmap.height, data: new Uint8Array(data.buffer), name };
  bitmap.close();
  return pixels;
}
