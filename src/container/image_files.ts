// The account files (/etc/passwd, /etc/group) of each image, read once per image.
//
// A new container's rootfs is its image's layers under an empty upper dir, so these files are the
// image's own, the same for every container of one image id (a content digest). Knowing them
// without a mounted rootfs lets CreateContainer build the spec while the overlay is mounted.

import { type ImageFileReader, rootfsFiles } from './user';

/** Images whose files are kept; a node runs a few dozen images, each file a few KiB. */
const MAX_IMAGES = 64;

export class ImageFileCache {
  private readonly byImage = new Map<string, Map<string, Promise<string | null>>>();

  /**
   * A reader for a container of `imageId` whose rootfs will be mounted at `rootfs` once `mounted`
   * settles; it reads from there only what no earlier container of the image has read.
   */
  reader(imageId: string, rootfs: string, mounted: Promise<void>): ImageFileReader {
    const own = rootfsFiles(rootfs);
    const fromRootfs: ImageFileReader = async (file) => {
      await mounted;
      return own(file);
    };
    return (file) => {
      let files = this.byImage.get(imageId);
      if (!files) {
        files = new Map();
        this.byImage.set(imageId, files);
        const oldest = this.byImage.keys().next();
        if (this.byImage.size > MAX_IMAGES && !oldest.done) this.byImage.delete(oldest.value);
      }
      const known = files.get(file);
      // Another container's read that failed (its mount, say) says nothing about this one.
      if (known) return known.catch(() => fromRootfs(file));
      const read = fromRootfs(file);
      files.set(file, read);
      read.catch(() => files.delete(file));
      return read;
    };
  }
}
