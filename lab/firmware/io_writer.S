# remediator lab: a multiboot "kernel" (qboot loads it through fw_cfg; nothing boots from the disk)
# that writes one sector to the guest's IDE disk every second, each to a new 64 KiB qcow2 cluster,
# so every write makes the image file grow: on a full filesystem the write fails with ENOSPC and a
# disk with error_policy='stop' pauses the guest (reason ioerror). Between writes the CPU halts.
# Built by lab/firmware.py with binutils (as --32, ld -m elf_i386). docs/lab.md "Storage".
        .code32
        .section .text
        .globl _start
        .align 4
multiboot:
        .long 0x1BADB002
        .long 0
        .long -0x1BADB002
_start:
        cli
        lgdt gdtr
        ljmp $0x08, $reload
reload:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $stack_top, %esp
        # IDT: vector 0x20 (the APIC timer) -> tick, every other -> ignore
        mov $idt, %edi
        mov $256, %ecx
1:      mov $ignore, %eax
        cmp $(256-0x20), %ecx
        jne 2f
        mov $tick, %eax
2:      mov %ax, (%edi)
        movw $0x08, 2(%edi)
        movw $0x8E00, 4(%edi)
        shr $16, %eax
        mov %ax, 6(%edi)
        add $8, %edi
        loop 1b
        lidt idtr
        # No PIC (all masked): the local APIC's own timer wakes the CPU once a second
        mov $0xFF, %al
        out %al, $0x21
        out %al, $0xA1
        movl $0x1FF, 0xFEE000F0         # spurious-interrupt vector register: APIC on, vector 0xFF
        movl $0xB, 0xFEE003E0           # timer divide by 1
        movl $0x20020, 0xFEE00320       # LVT timer: periodic, vector 0x20
        movl $1000000000, 0xFEE00380    # initial count: 1 s at the 1 GHz APIC bus of KVM and QEMU
        xor %ebx, %ebx              # LBA of the next write
idle:   sti                             # (this machine's nested KVM cannot emulate iret: the
        hlt                             # timer's handler never returns, it starts the loop again)
        jmp idle

write_sector:
        mov $0x1F7, %dx
3:      in %dx, %al
        test $0x80, %al
        jnz 3b
        mov $0x1F6, %dx
        mov %ebx, %eax
        shr $24, %eax
        and $0x0F, %al
        or $0xE0, %al
        out %al, %dx
        mov $0x1F2, %dx
        mov $1, %al
        out %al, %dx
        mov $0x1F3, %dx
        mov %bl, %al
        out %al, %dx
        mov $0x1F4, %dx
        mov %bh, %al
        out %al, %dx
        mov $0x1F5, %dx
        mov %ebx, %eax
        shr $16, %eax
        out %al, %dx
        mov $0x1F7, %dx
        mov $0x30, %al              # WRITE SECTORS
        out %al, %dx
4:      in %dx, %al
        test $0x01, %al             # ERR: give up on this one
        jnz 5f
        test $0x80, %al
        jnz 4b
        test $0x08, %al             # DRQ
        jz 4b
        mov $sector, %esi
        mov $256, %ecx
        mov $0x1F0, %dx
        rep outsw
5:      ret

tick:   movl $0, 0xFEE000B0             # EOI
        mov $stack_top, %esp
        call write_sector
        add $128, %ebx                  # the next 64 KiB cluster: every write allocates
        and $0x7FFF, %ebx               # within 16 MiB
        jmp idle
ignore: jmp idle

        .section .data
        .align 8
gdt:    .quad 0
        .quad 0x00CF9A000000FFFF
        .quad 0x00CF92000000FFFF
gdtr:   .word 23
        .long gdt
idtr:   .word 256*8-1
        .long idt
sector: .fill 512, 1, 0x5A
        .section .bss
        .align 8
idt:    .skip 256*8
        .skip 4096
stack_top:
