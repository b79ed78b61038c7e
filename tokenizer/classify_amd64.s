//go:build amd64 && !purego

#include "textflag.h"

// One 32-byte half of a block: load at off(SI), store the eight 32-bit masks at
// moff(DI) + 8*k (k = letter, upper, digit, space, nl, hi, lower, other; see
// classify.go). BX gathers letter|digit|space|hi for other = ^BX.
// Constants: Y7='\r' Y8='A' Y9='a' Y10='0' Y11=9 (also '\t') Y12=25 Y13=4 Y14=' ' Y15='\n'.
#define HALF(off, moff) \
	VMOVDQU off(SI), Y0 \
	VPMOVMSKB Y0, AX \
	MOVL AX, (40+moff)(DI) \
	MOVL AX, BX \
	VPSUBB Y8, Y0, Y1 \
	VPMINUB Y12, Y1, Y2 \
	VPCMPEQB Y2, Y1, Y2 \
	VPMOVMSKB Y2, AX \
	MOVL AX, (8+moff)(DI) \
	VPSUBB Y9, Y0, Y1 \
	VPMINUB Y12, Y1, Y3 \
	VPCMPEQB Y3, Y1, Y3 \
	VPMOVMSKB Y3, AX \
	MOVL AX, (48+moff)(DI) \
	VPOR Y2, Y3, Y3 \
	VPMOVMSKB Y3, AX \
	MOVL AX, (0+moff)(DI) \
	ORL AX, BX \
	VPSUBB Y10, Y0, Y1 \
	VPMINUB Y11, Y1, Y2 \
	VPCMPEQB Y2, Y1, Y2 \
	VPMOVMSKB Y2, AX \
	MOVL AX, (16+moff)(DI) \
	ORL AX, BX \
	VPCMPEQB Y15, Y0, Y3 \
	VPCMPEQB Y7, Y0, Y4 \
	VPOR Y3, Y4, Y4 \
	VPMOVMSKB Y4, AX \
	MOVL AX, (32+moff)(DI) \
	VPSUBB Y11, Y0, Y1 \
	VPMINUB Y13, Y1, Y2 \
	VPCMPEQB Y2, Y1, Y2 \
	VPCMPEQB Y14, Y0, Y3 \
	VPOR Y2, Y3, Y2 \
	VPMOVMSKB Y2, AX \
	MOVL AX, (24+moff)(DI) \
	ORL AX, BX \
	NOTL BX \
	MOVL BX, (56+moff)(DI)

#define BCAST(val, X, Y) \
	MOVL $val, AX \
	MOVQ AX, X \
	VPBROADCASTB X, Y

// func classifyAVX2(dst *blockMasks, src *byte, nblocks int)
TEXT ·classifyAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nblocks+16(FP), CX
	TESTQ CX, CX
	JZ   done
	BCAST(0x0d, X7, Y7)
	BCAST(0x41, X8, Y8)
	BCAST(0x61, X9, Y9)
	BCAST(0x30, X10, Y10)
	BCAST(0x09, X11, Y11)
	BCAST(0x19, X12, Y12)
	BCAST(0x04, X13, Y13)
	BCAST(0x20, X14, Y14)
	BCAST(0x0a, X15, Y15)

loop:
	HALF(0, 0)
	HALF(32, 4)
	ADDQ $64, SI
	ADDQ $64, DI
	DECQ CX
	JNZ  loop
	VZEROUPPER

done:
	RET
