import type { ImageStatusRequest__Output } from '../../gen/runtime/v1/ImageStatusRequest';
import type { ImageStatusResponse } from '../../gen/runtime/v1/ImageStatusResponse';
import type { ImageService } from '../../image/image_service';
import { imageToCri } from './image_to_cri';

export function imageStatus(req: ImageStatusRequest__Output, images: ImageService): ImageStatusResponse {
  const rec = images.find(req.image?.image ?? '');
  // A missing image is not an error: the kubelet asks before every pull (cri-api ImageStatus).
  if (!rec) return { image: null, info: {} };
  const res: ImageStatusResponse = { image: imageToCri(rec, images.isPinned(rec)), info: {} };
  if (req.verbose) {
    res.info = {
      info: JSON.stringify({
        imageSpec: rec.config,
        manifestDigest: rec.manifestDigest,
        chainIDs: rec.layers.map((l) => l.chainId),
        layers: rec.layers,
      }),
    };
  }
  return res;
}
