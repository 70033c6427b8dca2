/* fuzz_st_arch.h - the two tiny architectures of the safetensors seeds and
 * of fuzz_safetensors' `expect` argument (a few hundred bytes of weights,
 * so inputs stay small and executions fast). */
#ifndef FUZZ_ST_ARCH_H
#define FUZZ_ST_ARCH_H

#define FUZZ_ST_ARCH_MLP                                                                                               \
    "{\"name\":\"tiny-mlp\",\"input\":[1,2,2],\"layers\":[{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":3},"  \
    "{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.2},{\"type\":\"linear\",\"out\":10}]}"
#define FUZZ_ST_ARCH_CNN                                                                                               \
    "{\"name\":\"tiny-cnn\",\"input\":[1,5,5],\"layers\":[{\"type\":\"conv2d\",\"out\":2,\"kernel\":3,"             \
    "\"padding\":\"same\"},{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"conv2d\","        \
    "\"out\":2,\"kernel\":2},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}]}"

/* a residual block with batch norm and a strided conv + batch norm projection */
#define FUZZ_ST_ARCH_RES                                                                                               \
    "{\"name\":\"tiny-resnet\",\"input\":[1,4,4],\"layers\":[{\"type\":\"conv2d\",\"out\":2,\"kernel\":3,"         \
    "\"padding\":\"same\",\"bias\":false},{\"type\":\"batchnorm2d\"},{\"type\":\"relu\",\"name\":\"a\"},"            \
    "{\"type\":\"conv2d\",\"out\":3,\"kernel\":3,\"stride\":2,\"padding\":\"same\"},{\"type\":\"add\","              \
    "\"inputs\":[-1,\"a\"]},{\"type\":\"global_avgpool\"},{\"type\":\"linear\",\"out\":10}]}"

#endif
