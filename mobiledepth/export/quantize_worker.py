"""Child process: post-training quantisation with TensorFlow's TFLiteConverter.

Runs in the converter environment, by file path (``mobiledepth.converter_env.worker_command``):
it imports only numpy and TensorFlow, never mobiledepth.

Usage: python quantize_worker.py SAVED_MODEL IMAGES.npy int8|int16x8 OUT.tflite
"""

import os
import sys


def main(saved_model: str, images_path: str, precision: str, out_path: str) -> None:
    import numpy as np
    import tensorflow as tf

    images = np.load(images_path)  # (N, H, W, 3) float32 in [0, 1], NHWC like the SavedModel

    def representative():
        for image in images:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    if precision == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    else:
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        converter.inference_input_type = tf.int16
        converter.inference_output_type = tf.int16
    model = converter.convert()
    partial = out_path + ".part"  # a crash or a full disk never leaves a truncated model under the real name
    with open(partial, "wb") as handle:
        handle.write(model)
    os.replace(partial, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:5])
