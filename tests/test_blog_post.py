"""The blog post's Keras code runs on tinynet by changing only its import lines.

``BLOG_SCRIPT`` is written as the post writes GoogLeNet in Keras (an ``Inception_block`` function, an
``Inception_v1()`` builder with BatchNormalization in the stem, aux heads without ``Flatten``, 5a/5b with the
reduce counts repeated, ``AvgPool2D(7)`` + ``Flatten``) and ends with the post's ``plot_model`` call. Its import
lines name ``keras``; the test runs it once with them pointing at Keras and once with ``keras`` replaced by
``tinynet`` — nothing else changes — and both build the same network: Keras' own count of 9,121,976 parameters.
"""
import os
import re

import pytest

BLOG_SCRIPT = '''
from keras.layers import Input, Conv2D, MaxPool2D, AveragePooling2D, Dropout, Dense, Flatten
from keras.layers import BatchNormalization, concatenate
from keras.models import Model
from keras.utils import plot_model


def Inception_block(input_layer, f1, f2_conv1, f2_conv3, f3_conv1, f3_conv5, f4):
    path1 = Conv2D(filters=f1, kernel_size=(1, 1), padding='same', activation='relu')(input_layer)
    path2 = Conv2D(filters=f2_conv1, kernel_size=(1, 1), padding='same', activation='relu')(input_layer)
    path2 = Conv2D(filters=f2_conv3, kernel_size=(3, 3), padding='same', activation='relu')(path2)
    path3 = Conv2D(filters=f3_conv1, kernel_size=(1, 1), padding='same', activation='relu')(input_layer)
    path3 = Conv2D(filters=f3_conv5, kernel_size=(5, 5), padding='same', activation='relu')(path3)
    path4 = MaxPool2D((3, 3), strides=(1, 1), padding='same')(input_layer)
    path4 = Conv2D(filters=f4, kernel_size=(1, 1), padding='same', activation='relu')(path4)
    output_layer = concatenate([path1, path2, path3, path4], axis=-1)
    return output_layer


def Inception_v1():
    input_layer = Input(shape=(224, 224, 3))
    X = Conv2D(filters=64, kernel_size=(7, 7), strides=2, padding='same', activation='relu')(input_layer)
    X = BatchNormalization()(X)
    X = MaxPool2D(pool_size=(3, 3), strides=2, padding='same')(X)
    X = Conv2D(filters=64, kernel_size=(1, 1), strides=1, padding='same', activation='relu')(X)
    X = Conv2D(filters=192, kernel_size=(3, 3), padding='same', activation='relu')(X)
    X = BatchNormalization()(X)
    X = MaxPool2D(pool_size=(3, 3), strides=2, padding='same')(X)
    X = Inception_block(X, f1=64, f2_conv1=96, f2_conv3=128, f3_conv1=16, f3_conv5=32, f4=32)
    X = Inception_block(X, f1=128, f2_conv1=128, f2_conv3=192, f3_conv1=32, f3_conv5=96, f4=64)
    X = MaxPool2D(pool_size=(3, 3), strides=2, padding='same')(X)
    X = Inception_block(X, f1=192, f2_conv1=96, f2_conv3=208, f3_conv1=16, f3_conv5=48, f4=64)
    X1 = AveragePooling2D(pool_size=(5, 5), strides=3)(X)
    X1 = Conv2D(filters=128, kernel_size=(1, 1), padding='same', activation='relu')(X1)
    X1 = Dense(1024, activation='relu')(X1)
    X1 = Dropout(0.7)(X1)
    X1 = Dense(1000, activation='softmax')(X1)
    X = Inception_block(X, f1=160, f2_conv1=112, f2_conv3=224, f3_conv1=24, f3_conv5=64, f4=64)
    X = Inception_block(X, f1=128, f2_conv1=128, f2_conv3=256, f3_conv1=24, f3_conv5=64, f4=64)
    X = Inception_block(X, f1=112, f2_conv1=144, f2_conv3=288, f3_conv1=32, f3_conv5=64, f4=64)
    X2 = AveragePooling2D(pool_size=(5, 5), strides=3)(X)
    X2 = Conv2D(filters=128, kernel_size=(1, 1), padding='same', activation='relu')(X2)
    X2 = Dense(1024, activation='relu')(X2)
    X2 = Dropout(0.7)(X2)
    X2 = Dense(1000, activation='softmax')(X2)
    X = Inception_block(X, f1=256, f2_conv1=160, f2_conv3=320, f3_conv1=32, f3_conv5=128, f4=128)
    X = MaxPool2D(pool_size=(3, 3), strides=2, padding='same')(X)
    X = Inception_block(X, f1=256, f2_conv1=160, f2_conv3=320, f3_conv1=32, f3_conv5=32, f4=128)
    X = Inception_block(X, f1=384, f2_conv1=192, f2_conv3=384, f3_conv1=48, f3_conv5=48, f4=128)
    X = AveragePooling2D(pool_size=(7, 7), strides=1, padding='valid')(X)
    X = Flatten()(X)
    X = Dropout(0.4)(X)
    X = Dense(1000, activation='softmax')(X)
    model = Model(input_layer, [X, X1, X2], name='GoogLeNet')
    return model


model = Inception_v1()
plot_model(model, to_file=TO_FILE, show_shapes=True, dpi=150)
'''

#: The post's code as written: 9,121,976 parameters by Keras' own count (BatchNormalization's moving statistics
#: included; see docs/googlenet.md).
KERAS_PARAMS = 9_121_976


def run_blog_script(framework, to_file):
    """Execute the script with its imports naming ``framework`` ('keras' or 'tinynet'); return its namespace."""
    source = re.sub(r"^from keras\.", f"from {framework}.", BLOG_SCRIPT, flags=re.MULTILINE)
    assert source.count(f"from {framework}.") == 4  # the four import lines, and nothing else, changed
    namespace = {"TO_FILE": str(to_file)}
    exec(compile(source, f"blog_post_{framework}.py", "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_the_blog_post_runs_on_tinynet_by_changing_its_imports(tmp_path):
    import tinynet

    ns = run_blog_script("tinynet", tmp_path / "model.png")
    model = ns["model"]
    assert isinstance(model, tinynet.Model) and model.name == "GoogLeNet"
    assert [t.shape for t in model.outputs] == [(None, 1000), (None, 4, 4, 1000), (None, 4, 4, 1000)]
    assert model.count_params() == KERAS_PARAMS
    assert (tmp_path / "model.png").stat().st_size > 50_000


@pytest.mark.keras
def test_keras_counts_the_same_parameters_without_plotting():
    """Keras' plot_model needs Graphviz, which this project does not install: count without plotting."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    pytest.importorskip("jax")
    source = re.sub(r"^plot_model\(.*$", "", BLOG_SCRIPT, flags=re.MULTILINE)
    source = source.replace("from keras.utils import plot_model\n", "")
    namespace = {}
    exec(compile(source, "blog_post_keras.py", "exec"), namespace)
    assert isinstance(namespace["model"], keras.Model)
    assert namespace["model"].count_params() == KERAS_PARAMS
