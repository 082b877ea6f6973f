#ifndef SHARDCAL_CIMAGECODECS_SHIM_H
#define SHARDCAL_CIMAGECODECS_SHIM_H
/*
 * Image codecs (libjpeg-turbo, libpng) and zlib for shardcal's Data module.
 *
 * libjpeg and libpng report fatal errors through a callback that must not
 * return; the usual answer is setjmp/longjmp, which Swift cannot express.
 * The decode entry points below therefore live here, in C: each one owns its
 * setjmp, and a longjmp never crosses a Swift frame. Swift only ever sees a
 * status code and a message.
 *
 * Both decoders produce 8-bit RGB, row-major, 3 bytes per pixel:
 *  - JPEG: islow IDCT and fancy upsampling (libjpeg's defaults, as Pillow
 *    uses them); grayscale JPEGs are replicated to RGB; CMYK/YCCK are
 *    rejected. Any libjpeg warning (corrupt data, premature end of file) is
 *    treated as an error: a damaged image never decodes silently.
 *  - PNG: palette expanded, gray replicated, 16-bit reduced to its high byte,
 *    alpha dropped (no compositing), no gamma correction.
 *
 * Status codes: 0 success, 1 decode error (message set), 2 output buffer too
 * small (width and height set; call again with width*height*3 bytes).
 */
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#define SHARDCAL_CODEC_OK 0
#define SHARDCAL_CODEC_ERROR 1
#define SHARDCAL_CODEC_NEED_SPACE 2

static inline void shardcal_copy_message(char *dst, size_t cap, const char *src) {
    if (cap == 0) return;
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* ---------------------------------------------------------------- JPEG -- */

struct shardcal_jpeg_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char text[JMSG_LENGTH_MAX];
};

static inline void shardcal_jpeg_error_exit(j_common_ptr cinfo) {
    struct shardcal_jpeg_error *err = (struct shardcal_jpeg_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->text);
    longjmp(err->jump, 1);
}

static inline void shardcal_jpeg_emit_message(j_common_ptr cinfo, int level) {
    if (level < 0) { /* a warning: corrupt data; treat as fatal */
        struct shardcal_jpeg_error *err = (struct shardcal_jpeg_error *)cinfo->err;
        (*cinfo->err->format_message)(cinfo, err->text);
        longjmp(err->jump, 1);
    }
}

static inline int shardcal_jpeg_decode_rgb(const unsigned char *data, unsigned long size,
                                           unsigned char *out, size_t out_capacity,
                                           int *width, int *height,
                                           char *message, size_t message_capacity) {
    struct jpeg_decompress_struct cinfo;
    struct shardcal_jpeg_error jerr;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = shardcal_jpeg_error_exit;
    jerr.pub.emit_message = shardcal_jpeg_emit_message;
    jerr.text[0] = 0;
    *width = 0;
    *height = 0;
    if (setjmp(jerr.jump)) {
        shardcal_copy_message(message, message_capacity, jerr.text[0] ? jerr.text : "JPEG decode error");
        jpeg_destroy_decompress(&cinfo);
        return SHARDCAL_CODEC_ERROR;
    }
    jpeg_create_decompress(&cinfo);
    if (size == 0) {
        shardcal_copy_message(message, message_capacity, "empty file");
        jpeg_destroy_decompress(&cinfo);
        return SHARDCAL_CODEC_ERROR;
    }
    jpeg_mem_src(&cinfo, data, size);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        shardcal_copy_message(message, message_capacity, "CMYK/YCCK JPEG is not supported");
        jpeg_destroy_decompress(&cinfo);
        return SHARDCAL_CODEC_ERROR;
    }
    *width = (int)cinfo.image_width;
    *height = (int)cinfo.image_height;
    if ((size_t)cinfo.image_width * (size_t)cinfo.image_height * 3u > out_capacity) {
        jpeg_destroy_decompress(&cinfo);
        return SHARDCAL_CODEC_NEED_SPACE;
    }
    cinfo.out_color_space = JCS_RGB;
    cinfo.dct_method = JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&cinfo);
    if (cinfo.output_components != 3 || (int)cinfo.output_width != *width || (int)cinfo.output_height != *height) {
        shardcal_copy_message(message, message_capacity, "unexpected JPEG output geometry");
        jpeg_destroy_decompress(&cinfo);
        return SHARDCAL_CODEC_ERROR;
    }
    size_t stride = (size_t)cinfo.output_width * 3u;
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW rows[8];
        JDIMENSION want = cinfo.output_height - cinfo.output_scanline;
        if (want > 8) want = 8;
        for (JDIMENSION r = 0; r < want; r++) rows[r] = out + (size_t)(cinfo.output_scanline + r) * stride;
        jpeg_read_scanlines(&cinfo, rows, want);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return SHARDCAL_CODEC_OK;
}

/* ----------------------------------------------------------------- PNG -- */

struct shardcal_png_context {
    jmp_buf jump;
    const unsigned char *data;
    size_t size;
    size_t offset;
    char text[256];
};

static inline void shardcal_png_error(png_structp png, png_const_charp msg) {
    struct shardcal_png_context *ctx = (struct shardcal_png_context *)png_get_error_ptr(png);
    shardcal_copy_message(ctx->text, sizeof ctx->text, msg ? msg : "PNG decode error");
    longjmp(ctx->jump, 1);
}

static inline void shardcal_png_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* benign (e.g. unknown ancillary chunk); fatal problems come through the error path */
}

static inline void shardcal_png_read(png_structp png, png_bytep dst, png_size_t length) {
    struct shardcal_png_context *ctx = (struct shardcal_png_context *)png_get_io_ptr(png);
    if (length > ctx->size - ctx->offset) png_error(png, "truncated PNG data");
    memcpy(dst, ctx->data + ctx->offset, length);
    ctx->offset += length;
}

static inline int shardcal_png_decode_rgb(const unsigned char *data, unsigned long size,
                                          unsigned char *out, size_t out_capacity,
                                          int *width, int *height,
                                          char *message, size_t message_capacity) {
    struct shardcal_png_context ctx;
    png_structp png = NULL;
    png_infop info = NULL;
    png_bytep *volatile rows = NULL;
    ctx.data = data;
    ctx.size = size;
    ctx.offset = 0;
    ctx.text[0] = 0;
    *width = 0;
    *height = 0;
    if (size < 8 || png_sig_cmp((png_const_bytep)data, 0, 8) != 0) {
        shardcal_copy_message(message, message_capacity, "not a PNG file (bad signature)");
        return SHARDCAL_CODEC_ERROR;
    }
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, shardcal_png_error, shardcal_png_warning);
    if (!png) {
        shardcal_copy_message(message, message_capacity, "png_create_read_struct failed");
        return SHARDCAL_CODEC_ERROR;
    }
    info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        shardcal_copy_message(message, message_capacity, "png_create_info_struct failed");
        return SHARDCAL_CODEC_ERROR;
    }
    if (setjmp(ctx.jump)) {
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        shardcal_copy_message(message, message_capacity, ctx.text[0] ? ctx.text : "PNG decode error");
        return SHARDCAL_CODEC_ERROR;
    }
    png_set_read_fn(png, &ctx, shardcal_png_read);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info);
    png_uint_32 h = png_get_image_height(png, info);
    int bit_depth = png_get_bit_depth(png, info);
    int color_type = png_get_color_type(png, info);
    *width = (int)w;
    *height = (int)h;
    if ((size_t)w * (size_t)h * 3u > out_capacity) {
        png_destroy_read_struct(&png, &info, NULL);
        return SHARDCAL_CODEC_NEED_SPACE;
    }
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (bit_depth == 16) png_set_strip_16(png);
    if (color_type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3u) png_error(png, "unexpected PNG row layout after transforms");
    rows = (png_bytep *)malloc(sizeof(png_bytep) * (h ? h : 1));
    if (!rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = out + (size_t)y * (size_t)w * 3u;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    rows = NULL;
    png_destroy_read_struct(&png, &info, NULL);
    return SHARDCAL_CODEC_OK;
}

#endif
