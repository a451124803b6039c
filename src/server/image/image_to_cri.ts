import type { Image } from '../../gen/runtime/v1/Image';
import type { ImageRecord } from '../../image/image_store';

/**
 * The CRI view of an image. The image's USER sets `uid` when numeric and `username`
 * otherwise (only the part before a `:` group), as the kubelet's runAsNonRoot check expects.
 */
export function imageToCri(rec: ImageRecord, pinned: boolean): Image {
  const user = (rec.config.config?.User ?? '').split(':')[0];
  const numeric = /^\d+$/.test(user);
  return {
    id: rec.id,
    repo_tags: rec.repoTags,
    repo_digests: rec.repoDigests,
    size: rec.size,
    uid: numeric ? { value: user } : null,
    username: numeric ? '' : user,
    spec: { image: rec.id, annotations: {} },
    pinned,
  };
}
