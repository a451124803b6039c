import type { PullImageRequest__Output } from '../../gen/runtime/v1/PullImageRequest';
import type { PullImageResponse } from '../../gen/runtime/v1/PullImageResponse';
import type { ImageService } from '../../image/image_service';
import type { CallContext } from '../grpc';

export async function pullImage(req: PullImageRequest__Output, images: ImageService, ctx: CallContext): Promise<PullImageResponse> {
  const auth = req.auth ?? undefined;
  const rec = await images.pull(req.image?.image ?? '', auth, ctx.signal, ctx.log);
  // image_ref is the image id, the same string ImageStatus returns as Image.id (the kubelet
  // compares them from 1.36 on).
  return { image_ref: rec.id };
}
