import type { ImageFsInfoResponse } from '../../gen/runtime/v1/ImageFsInfoResponse';
import type { ImageService } from '../../image/image_service';

/** Usage of the layer store, summed from what each unpack recorded: no tree walk per call. */
export function imageFsInfo(images: ImageService): ImageFsInfoResponse {
  const usage = images.fsUsage();
  const fs = {
    timestamp: (BigInt(Date.now()) * 1_000_000n).toString(),
    fs_id: { mountpoint: usage.mountpoint },
    used_bytes: { value: usage.bytes },
    inodes_used: { value: usage.inodes },
  };
  return { image_filesystems: [fs], container_filesystems: [] };
}
