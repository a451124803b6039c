import type { StreamImagesRequest__Output } from '../../gen/runtime/v1/StreamImagesRequest';
import type { StreamImagesResponse } from '../../gen/runtime/v1/StreamImagesResponse';
import type { ImageService } from '../../image/image_service';
import { imageToCri } from './image_to_cri';

/** Pages of images, so a node with thousands of them never builds one huge message. */
const PAGE = 500;

export function streamImages(req: StreamImagesRequest__Output, images: ImageService, send: (msg: StreamImagesResponse) => void): void {
  const wanted = req.filter?.image?.image;
  const records = wanted ? [images.find(wanted)].filter((r) => r !== undefined) : images.list();
  const all = records.map((r) => imageToCri(r, images.isPinned(r)));
  for (let i = 0; i < all.length; i += PAGE) send({ images: all.slice(i, i + PAGE) });
}
