import type { StreamImagesRequest__Output } from '../../gen/runtime/v1/StreamImagesRequest';
import type { StreamImagesResponse } from '../../gen/runtime/v1/StreamImagesResponse';
import type { ImageService } from '../../image/image_service';
import { listImages } from './image_list';

/** Pages of images, so a node with thousands of them never builds one huge message. */
const PAGE = 500;

export async function streamImages(
  req: StreamImagesRequest__Output,
  images: ImageService,
  send: (msg: StreamImagesResponse) => void,
): Promise<void> {
  const all = (await listImages(req, images)).images ?? [];
  for (let i = 0; i < all.length; i += PAGE) send({ images: all.slice(i, i + PAGE) });
}
