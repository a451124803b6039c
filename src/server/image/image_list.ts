import type { ListImagesRequest__Output } from '../../gen/runtime/v1/ListImagesRequest';
import type { ListImagesResponse } from '../../gen/runtime/v1/ListImagesResponse';
import type { ImageService } from '../../image/image_service';
import { imageToCri } from './image_to_cri';

export async function listImages(req: ListImagesRequest__Output, images: ImageService): Promise<ListImagesResponse> {
  const wanted = req.filter?.image?.image;
  const records = wanted ? [images.find(wanted)].filter((r) => r !== undefined) : images.list();
  return { images: records.map((r) => imageToCri(r, images.isPinned(r))) };
}
