import type { ListImagesRequest__Output } from '../../gen/runtime/v1/ListImagesRequest';
import type { ImageService } from '../../image/image_service';
import { Encoded, MessageBuilder, type RecordEncodings } from '../encoding';

export function listImages(req: ListImagesRequest__Output, images: ImageService, enc: RecordEncodings): Encoded {
  const wanted = req.filter?.image?.image;
  const records = wanted ? [images.find(wanted)].filter((r) => r !== undefined) : images.list();
  // ListImagesResponse: repeated Image images = 1.
  return new Encoded(
    new MessageBuilder()
      .repeated(
        1,
        records.map((r) => enc.image.get(r)),
      )
      .finish(),
  );
}
