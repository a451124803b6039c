import type { RemoveImageRequest__Output } from '../../gen/runtime/v1/RemoveImageRequest';
import type { RemoveImageResponse } from '../../gen/runtime/v1/RemoveImageResponse';
import type { ImageService } from '../../image/image_service';

/** Removes the image and all its names; removing an unknown image succeeds (cri-api: idempotent). */
export async function removeImage(req: RemoveImageRequest__Output, images: ImageService): Promise<RemoveImageResponse> {
  await images.remove(req.image?.image ?? '');
  return {};
}
