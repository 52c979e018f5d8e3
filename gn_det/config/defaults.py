"""The one tree of defaults. Key names follow detectron2 (detectron2/config/defaults.py) wherever
detectron2 has the concept; MODEL.GN, MODEL.SN and a few others are gn_det's own.

Conventions: NORM keys take a name registered in gn_det.layers.NORM_REGISTRY ("" = no norm), CONV
keys a name in gn_det.layers.CONV_REGISTRY ("" = plain conv, "WS" = Weight Standardization); pixel values are in 0-255 in the INPUT.FORMAT channel order; sizes are in pixels; SOLVER.IMS_PER_BATCH
is the total over all processes.
"""
from .config import CfgNode as CN
from .norm_options import add_norm_option_nodes

_C = CN()
_C.VERSION = 2  # config format version (detectron2's is 2)

# ---------------------------------------------------------------------------- #
# Model
# ---------------------------------------------------------------------------- #
_C.MODEL = CN()
# "auto": each process on its own GPU (cuda:<local rank>) when CUDA is present, else the CPU; "cpu", "cuda"
# (= cuda:<local rank>) or "cuda:N". The tools write the device actually used into OUTPUT_DIR/config.yaml.
_C.MODEL.DEVICE = "auto"
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"  # name in META_ARCH_REGISTRY
_C.MODEL.MASK_ON = False  # add the mask head (Mask R-CNN) when True, else Faster R-CNN
_C.MODEL.WEIGHTS = ""  # local path of weights to load (any format gn_det.checkpoint knows); "" = none
# Pixel mean/std in the INPUT.FORMAT order and 0-255 scale. Defaults: MSRA/Caffe2 and FAIR GN weights
# (BGR, std 1) as in detectron2; torchvision and SN-author weights use RGB with ImageNet std (configs/).
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]
# Divide by this after subtracting PIXEL_MEAN (1 = Caffe2 weights, whose std is folded into conv1)
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]

# Options shared by every norm of a family, wherever a NORM key names it: MODEL.GN (NUM_GROUPS 32,
# DIM_PER_GP -1 = off, EPSILON 1e-5), MODEL.BN (MOMENTUM 0.1, EPSILON 1e-5; BN, SyncBN, FrozenBN) and
# MODEL.SN (USE_BN True, MOMENTUM 0.1, EPSILON 1e-5, FREEZE_STATS False). Generated from the families'
# options dataclasses (gn_det.layers: GNOptions, BNOptions, SNOptions; meanings and sources there), one
# node per registered family: get_cfg() adds the node of a norm family a user registers.
add_norm_option_nodes(_C)
# Batch-dependent norms (BN, SyncBN on one process, SN with its BN branch) at 1 image per process are
# refused before training (their statistics would come from one image); True trains them anyway (the
# norm comparison does, to measure exactly that).
_C.MODEL.ALLOW_BATCH_STATS_AT_1_IMAGE = False

# ---------------------------------------------------------------------------- #
# Backbone
# ---------------------------------------------------------------------------- #
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"  # name in BACKBONE_REGISTRY
# Freeze the stem (1) and res2..res5 up to this stage (2-5); 0 = train everything. Frozen stages
# take no gradient and their norms become FrozenBN-like (statistics frozen too), whatever the norm.
_C.MODEL.BACKBONE.FREEZE_AT = 2

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50  # 18, 34, 50, 101 (152)
_C.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # stages fed to the FPN
_C.MODEL.RESNETS.NUM_GROUPS = 1  # 1 = ResNet; >1 = ResNeXt cardinality
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64  # bottleneck width per group (ResNeXt); 64 for ResNet
_C.MODEL.RESNETS.NORM = "FrozenBN"  # norm in the stem, every block and every shortcut
# Norm at each bottleneck's 3x3 conv (and the stem) only, the XBN block of Huang et al. CVPR 2022;
# "" = same as MODEL.RESNETS.NORM.
_C.MODEL.RESNETS.NORM_3X3 = ""
_C.MODEL.RESNETS.CONV = ""  # conv of the stem, every block and shortcut: "" = plain, "WS" = Weight Standardization
# Stride in the 1x1 conv (MSRA/Caffe2) vs the 3x3 (torchvision, FAIR GN)
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256  # 64 for R18/R34
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64  # channels of the 7x7 stem conv
_C.MODEL.RESNETS.RES5_DILATION = 1  # 1 or 2
_C.MODEL.RESNETS.ZERO_INIT_RESIDUAL = False  # zero the last norm's weight in each block (Goyal et al. 2017)

_C.MODEL.FPN = CN()
# ResNet stages the FPN reads, finest first (strides must double)
_C.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
# Channels of every pyramid level P2-P6 (and so of the RPN and RoI head inputs)
_C.MODEL.FPN.OUT_CHANNELS = 256
_C.MODEL.FPN.NORM = ""  # norm after lateral and output convs; "" = none
_C.MODEL.FPN.CONV = ""  # lateral and output convs: "" = plain, "WS" = Weight Standardization
_C.MODEL.FPN.FUSE_TYPE = "sum"  # "sum" or "avg" of top-down and lateral

# ---------------------------------------------------------------------------- #
# Anchors and RPN
# ---------------------------------------------------------------------------- #
_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]  # one list per FPN level P2-P6
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]  # height / width
# Position of the first anchor centre, in strides from the image's top-left corner, in [0, 1):
# 0.0 puts centres at (i * stride, j * stride) (detectron2's and torchvision's default), 0.5 at cell centres
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0

_C.MODEL.RPN = CN()
# Pyramid levels the RPN predicts on; one ANCHOR_GENERATOR.SIZES entry each
_C.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
_C.MODEL.RPN.NMS_THRESH = 0.7  # IoU threshold of the NMS over proposals
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]  # [bg below, fg at or above]
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256  # anchors sampled per image for the RPN loss
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5  # target fraction of foreground anchors in those samples
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000  # per FPN level
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000  # per FPN level, in eval
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 1000  # per image (detectron2 FPN recipes)
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000  # per image, in eval
# Norm after the RPN head's 3x3 conv; "" = none (gn_det's own key). A norm with running statistics
# (BN, SyncBN, FrozenBN, SN with its BN branch) gets one copy per level, parameters shared (per-level
# statistics, as detectron2's CycleBatchNormList), so evaluation normalises each level with its own.
_C.MODEL.RPN.HEAD_NORM = ""
_C.MODEL.RPN.HEAD_CONV = ""  # the head's 3x3 conv: "" = plain, "WS" = Weight Standardization

# ---------------------------------------------------------------------------- #
# RoI heads
# ---------------------------------------------------------------------------- #
_C.MODEL.ROI_HEADS = CN()
# Detectron2's name; gn_det uses torchvision's RoIHeads with the registered box/mask heads
_C.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80  # foreground classes (no background), as in detectron2
# Pyramid levels RoIAlign pools from (level chosen by box size, FPN paper eq. 1)
_C.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]  # fg at or above, bg below
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512  # RoIs sampled per image
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25  # target fraction of foreground RoIs in those samples
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05  # detections below this score are dropped in eval
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5  # per-class NMS IoU threshold in eval
_C.MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE = 100  # TEST.DETECTIONS_PER_IMAGE in detectron2

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"  # name in ROI_BOX_HEAD_REGISTRY
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0  # 4 for the GN paper's 4conv1fc head
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256  # channels of each box-head conv
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 2  # 2fc head by default; 1 for 4conv1fc
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024  # width of each box-head fc
_C.MODEL.ROI_BOX_HEAD.NORM = ""  # norm after each conv of the box head
_C.MODEL.ROI_BOX_HEAD.CONV = ""  # box-head convs: "" = plain, "WS" = Weight Standardization
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7  # RoIAlign output size for the box head
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0  # 0 = adaptive, as in detectron2
# Pooling op (detectron2's names): "ROIAlignV2" (RoIAlign with aligned=True, half-pixel shift: detectron2's
# default), "ROIAlign" (aligned=False: torchvision's detectors and checkpoints trained with it), "ROIPool"
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
# (wx, wy, ww, wh) scaling of box deltas (Fast R-CNN's 10, 10, 5, 5)
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"  # name in ROI_MASK_HEAD_REGISTRY
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 4  # 3x3 convs before the 2x deconv (4 in Mask R-CNN FPN)
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256  # channels of each mask-head conv and the deconv
_C.MODEL.ROI_MASK_HEAD.NORM = ""  # norm after each conv of the mask head
_C.MODEL.ROI_MASK_HEAD.CONV = ""  # mask-head convs: "" = plain, "WS" = Weight Standardization
# RoIAlign output size for the mask head (masks predicted at 2x this)
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0  # 0 = adaptive, as in detectron2
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"  # as MODEL.ROI_BOX_HEAD.POOLER_TYPE

# ---------------------------------------------------------------------------- #
# Input
# ---------------------------------------------------------------------------- #
_C.INPUT = CN()
_C.INPUT.FORMAT = "BGR"  # channel order the model sees: "BGR" (MSRA/Caffe2 weights) or "RGB"
# The loader resizes (detectron2's ResizeShortestEdge: PIL bilinear on the uint8 image, sides rounded
# with int(x + 0.5)); the model only normalizes and pads, and maps eval outputs back to the original size.
_C.INPUT.MIN_SIZE_TRAIN = (800,)  # shortest edge in training, drawn per image as MIN_SIZE_TRAIN_SAMPLING says
# "choice": one of MIN_SIZE_TRAIN; "range": an integer uniformly in [MIN_SIZE_TRAIN[0], MIN_SIZE_TRAIN[1]]
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
_C.INPUT.MAX_SIZE_TRAIN = 1333  # cap on the longest edge in training
_C.INPUT.MIN_SIZE_TEST = 800  # shortest edge in eval; 0 = no resize
_C.INPUT.MAX_SIZE_TEST = 1333  # cap on the longest edge in eval
_C.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal" or "none"
_C.INPUT.MASK_FORMAT = "polygon"  # how masks are read ("polygon" or "bitmask" RLE); both decode to bitmaps

# ---------------------------------------------------------------------------- #
# Datasets and loader
# ---------------------------------------------------------------------------- #
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()  # names in the dataset catalog
_C.DATASETS.TEST = ()  # evaluated in order; results under OUTPUT_DIR/inference/<name>
# COCO-format datasets registered from YAML: a list of [NAME, JSON_FILE, IMAGE_ROOT] (gn_det's own)
_C.DATASETS.REGISTER_COCO = []

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2  # loader worker processes per training process; 0 = load in-process
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch images of like orientation together
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True  # drop training images with no (non-crowd) annotation

# ---------------------------------------------------------------------------- #
# Solver
# ---------------------------------------------------------------------------- #
_C.SOLVER = CN()
_C.SOLVER.IMS_PER_BATCH = 16  # total over all processes; each takes IMS_PER_BATCH / world size
_C.SOLVER.BASE_LR = 0.02  # for 16 images per step (linear scaling rule, Goyal et al. 2017)
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.NESTEROV = False  # Nesterov momentum
_C.SOLVER.WEIGHT_DECAY = 0.0001  # L2 on weights (not norms, see WEIGHT_DECAY_NORM)
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # for norm parameters (BN/GN/SN affine, SN importance weights)
_C.SOLVER.BIAS_LR_FACTOR = 1.0  # LR multiplier for biases
_C.SOLVER.MAX_ITER = 90000  # 1x schedule at 16 images per step
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # or "WarmupCosineLR" (detectron2's names)
_C.SOLVER.BASE_LR_END = 0.0  # WarmupCosineLR: the LR the cosine reaches at MAX_ITER
_C.SOLVER.STEPS = (60000, 80000)  # iterations where the LR is multiplied by GAMMA
_C.SOLVER.GAMMA = 0.1  # LR factor at each of STEPS
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000  # LR starts at BASE_LR * WARMUP_FACTOR
_C.SOLVER.WARMUP_ITERS = 1000  # linear warmup length; 0 = no warmup
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" or "constant"
_C.SOLVER.CHECKPOINT_PERIOD = 5000  # iterations between checkpoints
_C.SOLVER.AMP = CN()
# Mixed precision: the forward under torch.autocast (norm statistics stay float32). On CUDA float16 with
# a GradScaler; on CPU bfloat16 (CPU autocast's type; no scaler needed: bfloat16 has float32's range).
_C.SOLVER.AMP.ENABLED = False
_C.SOLVER.AMP.DTYPE = ""  # "" = the device's default above; "float16" (CUDA only) or "bfloat16"
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False  # clip gradients before each step
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"  # "norm" (global L2) or "value"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0  # max norm (CLIP_TYPE norm) or max abs value (CLIP_TYPE value)
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0  # p of the p-norm for CLIP_TYPE norm

# ---------------------------------------------------------------------------- #
# Test
# ---------------------------------------------------------------------------- #
_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 0  # iterations between evaluations during training; 0 = only at the end
# COCOeval implementation: "pycocotools", "faster-coco-eval" (C++, the same AP; pip extra
# "faster-coco-eval") or "auto" = faster-coco-eval where installed, else pycocotools.
_C.TEST.EVAL_BACKEND = "auto"
_C.TEST.PRECISE_BN = CN()
_C.TEST.PRECISE_BN.ENABLED = False  # recompute BN/SyncBN/SN running stats before each evaluation
_C.TEST.PRECISE_BN.NUM_ITER = 200  # batches used for that

# ---------------------------------------------------------------------------- #
# Misc
# ---------------------------------------------------------------------------- #
_C.OUTPUT_DIR = "./output"  # config.yaml, metrics.json, checkpoints, inference/ go here
_C.SEED = -1  # < 0 = a random seed, logged; >= 0 = deterministic
_C.CUDNN_BENCHMARK = False  # let cuDNN pick conv algorithms (faster, not deterministic)

# ---------------------------------------------------------------------------- #
# Backbone pretraining (tools/pretrain_backbone.py): the tiny ResNet of MODEL.RESNETS trained as an image
# classifier on gn_det.data.textures, so the fine-tuning comparison starts from pretrained norms.
# ---------------------------------------------------------------------------- #
_C.PRETRAIN = CN()
_C.PRETRAIN.NUM_CLASSES = 8  # texture classes used (2..8)
_C.PRETRAIN.IMAGE_SIZE = 64  # square images, pixels
_C.PRETRAIN.NUM_VAL_IMAGES = 512  # held-out images for the accuracy (a stream training never draws)
